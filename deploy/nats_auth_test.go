package deploy

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// natsAuthComponent turns NATS credentials and TLS on (kustomization.yaml
// names it in a comment for the operator to uncomment).
const (
	natsAuthComponent = "nats-auth"
	natsSecret        = "levee-nats"
)

// natsFileKeys are Levee's settings that name a file Levee reads to
// connect to NATS (queue.Security).
var natsFileKeys = []string{
	"LEVEE_QUEUE_NATS_CREDS", "LEVEE_QUEUE_NATS_NKEY_SEED",
	"LEVEE_QUEUE_NATS_TLS_CA", "LEVEE_QUEUE_NATS_TLS_CERT", "LEVEE_QUEUE_NATS_TLS_KEY",
}

// renderWithNATSAuth renders the kustomization with the nats-auth
// component turned on, as the operator's overlay would: the files are
// copied into memory, beside an overlay that lists both.
func renderWithNATSAuth(t *testing.T) *rendered {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(kustomizeDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(path.Join("/", filepath.ToSlash(p)), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	overlay := "resources:\n  - ../" + kustomizeDir + "\ncomponents:\n  - ../" + kustomizeDir + "/" + natsAuthComponent + "\n"
	if err := mem.WriteFile("/overlay/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	r, err := renderFS(mem, "/overlay")
	if err != nil {
		t.Fatalf("kustomize build with %s: %v", natsAuthComponent, err)
	}
	return r
}

// TestNATSCredentialsComeFromTheSecret: with nats-auth on, every Levee
// container connects over TLS with the files of the Secret levee-nats,
// mounted read-only and not world-readable, each one a key the README
// tells the operator to put in it; the settings are Levee's; no password
// sits in a ConfigMap.
func TestNATSCredentialsComeFromTheSecret(t *testing.T) {
	r := renderWithNATSAuth(t)
	l := leveeFacts(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	create := "kubectl -n " + r.Namespace + " create secret generic " + natsSecret
	if !strings.Contains(string(readme), create) {
		t.Errorf("README.md does not say how to create the Secret: `%s`", create)
	}
	for _, name := range sortedKeys(r.ConfigMaps) {
		if _, ok := r.ConfigMaps[name].Data["LEVEE_QUEUE_NATS_PASSWORD"]; ok {
			t.Errorf("ConfigMap %s holds LEVEE_QUEUE_NATS_PASSWORD: a password comes from a Secret", name)
		}
	}
	if len(r.Deployments) != len(roles) {
		t.Errorf("%d Deployments with %s, want %d (one per role)", len(r.Deployments), natsAuthComponent, len(roles))
	}
	forEachContainer(r, func(d *appsv1.Deployment, c corev1.Container, owner string) {
		env := envOf(t, r, owner, c)
		for _, k := range sortedKeys(env.vars) {
			if strings.HasPrefix(k, "LEVEE_") && !l.envVars[k] {
				t.Errorf("%s: %s is not a Levee setting", owner, k)
			}
		}
		if u := env.vars["LEVEE_QUEUE_NATS_URL"]; !strings.HasPrefix(u, "tls://") {
			t.Errorf("%s: LEVEE_QUEUE_NATS_URL %q, want tls://", owner, u)
		}
		if v, ok := env.vars["LEVEE_QUEUE_NATS_PASSWORD"]; ok && v != "$secret:"+natsSecret+"/password" {
			t.Errorf("%s: LEVEE_QUEUE_NATS_PASSWORD %q, want it from the Secret %s", owner, v, natsSecret)
		}
		files := 0
		for _, k := range natsFileKeys {
			p, ok := env.vars[k]
			if !ok {
				continue
			}
			files++
			key, ok := secretFile(t, d, c, p)
			if !ok {
				t.Errorf("%s: %s=%s is not a file of the Secret %s mounted in the container", owner, k, p, natsSecret)
				continue
			}
			if !strings.Contains(string(readme), "--from-file="+key+"=") {
				t.Errorf("%s: %s reads the Secret's key %q, which README.md does not tell to create (--from-file=%s=...)", owner, k, key, key)
			}
		}
		if files == 0 {
			t.Errorf("%s: no NATS credentials or CA file set", owner)
		}
	})
}

// secretFile finds which key of the Secret levee-nats the file p of
// container c is, and checks how it is mounted: read-only, not readable
// by others.
func secretFile(t *testing.T, d *appsv1.Deployment, c corev1.Container, p string) (key string, ok bool) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, found := strings.CutPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !found || m.SubPath != "" {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != natsSecret {
				continue
			}
			if !m.ReadOnly {
				t.Errorf("Deployment %s: the Secret %s is mounted writable", d.Name, natsSecret)
			}
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("Deployment %s: the Secret %s's files are readable by others (defaultMode %v): want 0440", d.Name, natsSecret, v.Secret.DefaultMode)
			}
			if v.Secret.Optional != nil && *v.Secret.Optional {
				t.Errorf("Deployment %s: the Secret %s is optional: without it Levee would start and fail on a missing file instead of waiting for it", d.Name, natsSecret)
			}
			if len(v.Secret.Items) == 0 {
				return rel, true
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					return it.Key, true
				}
			}
		}
	}
	return "", false
}

// TestKustomizationOffersNATSAuth: the base leaves NATS credentials off
// (the NATS chart in deploy/nats has none) but names the component, so the
// operator finds it.
func TestKustomizationOffersNATSAuth(t *testing.T) {
	r := renderKustomization(t)
	forEachContainer(r, func(_ *appsv1.Deployment, c corev1.Container, owner string) {
		for _, m := range c.VolumeMounts {
			if m.Name == "nats" {
				t.Errorf("%s: mounts the NATS Secret without the %s component", owner, natsAuthComponent)
			}
		}
	})
	k, err := os.ReadFile(filepath.Join(kustomizeDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(k), "#   - "+natsAuthComponent) {
		t.Errorf("kustomization.yaml does not offer the %s component (a commented `components:` entry)", natsAuthComponent)
	}
}
