package deploy

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/internal/bytesize"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	image = "ghcr.io/levee-mail/levee"
	// drainMargin is what the grace period must leave beyond the preStop
	// sleep and Levee's own deadline: signal delivery, closing the queue
	// and the store, process exit.
	drainMargin = 5 * time.Second
)

// roles are the `levee` subcommands a pod may run, and the
// app.kubernetes.io/component label that names them.
var roles = []string{"smtpd", "worker", "web"}

// containerRole is the subcommand the Deployment's single container runs.
func containerRole(d *appsv1.Deployment) string {
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(cs[0].Args) == 0 {
		return ""
	}
	return cs[0].Args[0]
}

// containerEnv is a container's environment as the kubelet builds it:
// envFrom first, then env (which wins). Values from Secrets are recorded
// in secrets ("name/key") and appear in env as "$secret:name/key".
type containerEnv struct {
	vars    map[string]string
	secrets []string
}

func envOf(t *testing.T, r *rendered, owner string, c corev1.Container) containerEnv {
	t.Helper()
	e := containerEnv{vars: map[string]string{}}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := r.ConfigMaps[from.ConfigMapRef.Name]
			if cm == nil {
				t.Errorf("%s: envFrom ConfigMap %q is not rendered", owner, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				e.vars[from.Prefix+k] = v
			}
		default:
			t.Errorf("%s: envFrom other than a ConfigMap: keep secrets to single keys", owner)
		}
	}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			e.vars[v.Name] = v.Value
		case v.ValueFrom.SecretKeyRef != nil:
			ref := v.ValueFrom.SecretKeyRef.Name + "/" + v.ValueFrom.SecretKeyRef.Key
			e.secrets = append(e.secrets, ref)
			e.vars[v.Name] = "$secret:" + ref
		case v.ValueFrom.ConfigMapKeyRef != nil:
			ref := v.ValueFrom.ConfigMapKeyRef
			cm := r.ConfigMaps[ref.Name]
			if cm == nil {
				t.Errorf("%s: env %s: ConfigMap %q is not rendered", owner, v.Name, ref.Name)
				continue
			}
			e.vars[v.Name] = cm.Data[ref.Key]
		default:
			e.vars[v.Name] = "$fieldref"
		}
	}
	return e
}

// forEachContainer runs f on every container of every Deployment.
func forEachContainer(r *rendered, f func(d *appsv1.Deployment, c corev1.Container, owner string)) {
	for _, name := range sortedKeys(r.Deployments) {
		d := r.Deployments[name]
		for _, c := range d.Spec.Template.Spec.InitContainers {
			f(d, c, "Deployment "+name+" init container "+c.Name)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			f(d, c, "Deployment "+name+" container "+c.Name)
		}
	}
}

func TestTerminationGraceOutlastsTheDrain(t *testing.T) {
	r := renderKustomization(t)
	forEachContainer(r, func(d *appsv1.Deployment, c corev1.Container, owner string) {
		env := envOf(t, r, owner, c)
		raw, ok := env.vars["LEVEE_SHUTDOWN_TIMEOUT"]
		if !ok {
			t.Errorf("%s: LEVEE_SHUTDOWN_TIMEOUT not set: set it explicitly so that the grace period can be checked against it", owner)
			return
		}
		timeout, err := time.ParseDuration(raw)
		if err != nil || timeout <= 0 {
			t.Errorf("%s: LEVEE_SHUTDOWN_TIMEOUT %q: not a positive duration", owner, raw)
			return
		}
		var sleep time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			pre := c.Lifecycle.PreStop
			switch {
			case pre.Sleep != nil:
				sleep = time.Duration(pre.Sleep.Seconds) * time.Second
			case pre.Exec != nil:
				// The image is distroless: no shell, no sleep binary.
				t.Errorf("%s: preStop exec cannot run in the distroless image; use preStop sleep", owner)
			}
		}
		g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
		if g == nil {
			t.Errorf("%s: terminationGracePeriodSeconds not set (the default 30s does not outlast the %s drain)", owner, timeout)
			return
		}
		grace := time.Duration(*g) * time.Second
		if need := sleep + timeout + drainMargin; grace < need {
			t.Errorf("%s: terminationGracePeriodSeconds %s < preStop %s + LEVEE_SHUTDOWN_TIMEOUT %s + %s margin: Kubernetes would kill a pod that is still draining",
				owner, grace, sleep, timeout, drainMargin)
		}
	})
}

func TestEveryContainerHasProbes(t *testing.T) {
	r := renderKustomization(t)
	forEachContainer(r, func(d *appsv1.Deployment, c corev1.Container, owner string) {
		env := envOf(t, r, owner, c)
		_, httpPort, err := net.SplitHostPort(env.vars["LEVEE_HTTP_ADDR"])
		if err != nil {
			t.Errorf("%s: LEVEE_HTTP_ADDR %q: %v", owner, env.vars["LEVEE_HTTP_ADDR"], err)
			return
		}
		if !strings.HasPrefix(env.vars["LEVEE_HTTP_ADDR"], "0.0.0.0:") && !strings.HasPrefix(env.vars["LEVEE_HTTP_ADDR"], ":") {
			t.Errorf("%s: LEVEE_HTTP_ADDR %q: the kubelet probes the pod IP; listen on all addresses", owner, env.vars["LEVEE_HTTP_ADDR"])
		}
		probe := func(kind string, p *corev1.Probe, paths ...string) {
			if p == nil {
				t.Errorf("%s: no %s probe", owner, kind)
				return
			}
			if p.HTTPGet == nil {
				t.Errorf("%s: %s probe is not an HTTP GET", owner, kind)
				return
			}
			if !slices.Contains(paths, p.HTTPGet.Path) {
				t.Errorf("%s: %s probe path %q, want one of %v", owner, kind, p.HTTPGet.Path, paths)
			}
			port, ok := resolvePort(c, p.HTTPGet.Port)
			if !ok {
				t.Errorf("%s: %s probe port %s is not a container port", owner, kind, p.HTTPGet.Port.String())
			} else if strconv.Itoa(int(port)) != httpPort {
				t.Errorf("%s: %s probe port %d, but Levee serves HTTP on %s", owner, kind, port, httpPort)
			}
		}
		// Liveness is never /readyz: a JetStream or store outage must not
		// get every pod restarted (web/status.go says why).
		probe("liveness", c.LivenessProbe, "/healthz")
		readiness := []string{"/readyz", "/healthz"}
		if role := containerRole(d); role == "smtpd" || role == "worker" {
			// A receiver that cannot queue mail must leave the load
			// balancer; a worker that cannot reach the store must not
			// replace one that can during a rollout.
			readiness = []string{"/readyz"}
		}
		probe("readiness", c.ReadinessProbe, readiness...)
		if c.StartupProbe != nil {
			probe("startup", c.StartupProbe, "/healthz", "/readyz")
		}
	})
}

// resolvePort turns a probe's or a Service's port (a name or a number)
// into the container port it means.
func resolvePort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func TestContainersRunLeveeSafely(t *testing.T) {
	r := renderKustomization(t)
	for _, name := range sortedKeys(r.Deployments) {
		d := r.Deployments[name]
		pod := d.Spec.Template.Spec
		owner := "Deployment " + name
		if len(pod.Containers) != 1 {
			t.Errorf("%s: want one container, got %d", owner, len(pod.Containers))
			continue
		}
		c := pod.Containers[0]
		role := containerRole(d)
		if !slices.Contains(roles, role) || len(c.Args) != 1 {
			t.Errorf("%s: args %v, want exactly one of %v", owner, c.Args, roles)
		}
		if got := d.Spec.Template.Labels["app.kubernetes.io/component"]; got != role {
			t.Errorf("%s: runs `levee %s` but its pods are labelled component=%q", owner, role, got)
		}
		if len(c.Command) != 0 {
			t.Errorf("%s: command %v overrides the image's entrypoint (levee)", owner, c.Command)
		}
		if repo, _, _ := strings.Cut(c.Image, ":"); repo != image {
			t.Errorf("%s: image %q, want %s", owner, c.Image, image)
		}
		// The Deployment's selector must pick its own pods (the API server
		// rejects it otherwise; this decoder does not).
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v does not select its own pod template (%v)", owner, d.Spec.Selector, err)
		}
		for _, tsc := range pod.TopologySpreadConstraints {
			s, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
			if err != nil || s.Empty() || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("%s: topology spread on %s does not select its own pods", owner, tsc.TopologyKey)
			}
		}

		// Memory: a limit, and GOMEMLIMIT under it so the runtime collects
		// before the kernel kills.
		limit, ok := c.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			t.Errorf("%s: no memory limit", owner)
		} else if env := envOf(t, r, owner, c); env.vars["GOMEMLIMIT"] == "" {
			t.Errorf("%s: GOMEMLIMIT not set", owner)
		} else if soft, err := parseGoMemLimit(env.vars["GOMEMLIMIT"]); err != nil {
			t.Errorf("%s: GOMEMLIMIT: %v", owner, err)
		} else if soft >= limit.Value() {
			t.Errorf("%s: GOMEMLIMIT %s is not below the memory limit %s", owner, env.vars["GOMEMLIMIT"], limit.String())
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("%s: no CPU request", owner)
		}

		// Levee needs nothing from the node or the API server.
		psc := pod.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("%s: pod must set runAsNonRoot", owner)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container must have a read-only root file system, no privilege escalation and drop ALL capabilities", owner)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken must be false: Levee never calls the Kubernetes API", owner)
		}
		if sa := pod.ServiceAccountName; sa != "" && r.ServiceAccounts[sa] == nil {
			t.Errorf("%s: ServiceAccount %q is not rendered", owner, sa)
		}
		// The read-only root needs a writable data_dir.
		env := envOf(t, r, owner, c)
		if dir := env.vars["LEVEE_DATA_DIR"]; !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir && !m.ReadOnly }) {
			t.Errorf("%s: LEVEE_DATA_DIR %q is not a writable volume mount", owner, dir)
		}
	}
}

// parseGoMemLimit reads GOMEMLIMIT as the Go runtime does (a byte count
// with an optional B, KiB, MiB, GiB or TiB suffix).
func parseGoMemLimit(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size the Go runtime reads", s)
	}
	return n * mult, nil
}

func TestConfigurationUsesLeveesKeys(t *testing.T) {
	r := renderKustomization(t)
	l := leveeFacts(t)
	for _, name := range sortedKeys(r.ConfigMaps) {
		for _, k := range sortedKeys(r.ConfigMaps[name].Data) {
			if strings.HasPrefix(k, "LEVEE_") && !l.envVars[k] {
				t.Errorf("ConfigMap %s: %s is not a Levee setting (`levee help` lists them)", name, k)
			}
		}
	}
	nv := natsValues(t)
	forEachContainer(r, func(d *appsv1.Deployment, c corev1.Container, owner string) {
		env := envOf(t, r, owner, c)
		for _, k := range sortedKeys(env.vars) {
			if strings.HasPrefix(k, "LEVEE_") && !l.envVars[k] {
				t.Errorf("%s: %s is not a Levee setting", owner, k)
			}
		}
		// Role processes need the external JetStream, replicated as the
		// NATS cluster allows.
		if env.vars["LEVEE_QUEUE_NATS_URL"] == "" {
			t.Errorf("%s: LEVEE_QUEUE_NATS_URL not set: `levee %s` needs an external JetStream", owner, containerRole(d))
		}
		if got, want := env.vars["LEVEE_QUEUE_REPLICAS"], strconv.Itoa(nv.Config.Cluster.Replicas); got != want {
			t.Errorf("%s: LEVEE_QUEUE_REPLICAS %q, want %s (the NATS cluster's size)", owner, got, want)
		}
		// The store is shared: workers write it, web reads it. Its URL
		// carries a password, so it comes from a Secret.
		switch role := containerRole(d); role {
		case "worker", "web":
			if v := env.vars["LEVEE_STORE"]; !strings.HasPrefix(v, "$secret:") {
				t.Errorf("%s: LEVEE_STORE must come from a Secret, got %q", owner, v)
			}
		case "smtpd":
			if _, ok := env.vars["LEVEE_STORE"]; ok {
				t.Errorf("%s: the receiver never opens the store: do not give it the store's credentials", owner)
			}
			_, port, err := net.SplitHostPort(env.vars["LEVEE_SMTP_ADDR"])
			if err != nil {
				t.Errorf("%s: LEVEE_SMTP_ADDR: %v", owner, err)
			} else if p, ok := resolvePort(c, intstr.FromString("smtp")); !ok || strconv.Itoa(int(p)) != port {
				t.Errorf("%s: container port smtp (%d) is not LEVEE_SMTP_ADDR's port %s", owner, p, port)
			}
			if env.vars["LEVEE_SMTP_DOMAINS"] == "" && env.vars["LEVEE_SMTP_ACCEPT_ALL_DOMAINS"] != "true" {
				t.Errorf("%s: no LEVEE_SMTP_DOMAINS: the receiver would accept only the defaults", owner)
			}
		}
		// The sizes that must nest: SMTP's SIZE < the stream's message
		// limit < the NATS servers' max_payload (app.Config.Finish and
		// queue.Open refuse to start otherwise).
		smtpMax, err1 := parseLeveeSize(env.vars["LEVEE_SMTP_MAX_MESSAGE_BYTES"])
		msgMax, err2 := parseLeveeSize(env.vars["LEVEE_QUEUE_MAX_MSG_SIZE"])
		if err1 != nil || err2 != nil {
			t.Errorf("%s: set LEVEE_SMTP_MAX_MESSAGE_BYTES and LEVEE_QUEUE_MAX_MSG_SIZE explicitly: %v %v", owner, err1, err2)
			return
		}
		if msgMax < smtpMax+headerRoom {
			t.Errorf("%s: LEVEE_QUEUE_MAX_MSG_SIZE %d < LEVEE_SMTP_MAX_MESSAGE_BYTES %d + 64KiB", owner, msgMax, smtpMax)
		}
		if payload := nv.maxPayload(t); payload < msgMax+headerRoom {
			t.Errorf("%s: NATS max_payload %d < LEVEE_QUEUE_MAX_MSG_SIZE %d + 64KiB (a dead-lettered copy's headers)", owner, payload, msgMax)
		}
	})
}

// headerRoom is what Levee adds to a message beyond its body limits
// (queue/config.go: headerRoom and SizeMargin; app.Config.Finish checks it).
const headerRoom = 64 << 10

// parseLeveeSize reads a size as Levee does: with Levee's own parser.
func parseLeveeSize(v string) (int64, error) {
	n, err := bytesize.Parse(v)
	if err == nil && n <= 0 {
		err = fmt.Errorf("invalid size %q", v)
	}
	return n, err
}

func TestSecretsAreDocumented(t *testing.T) {
	r := renderKustomization(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{}
	forEachContainer(r, func(_ *appsv1.Deployment, c corev1.Container, owner string) {
		for _, s := range envOf(t, r, owner, c).secrets {
			refs[s] = true
		}
	})
	if len(refs) == 0 {
		t.Fatal("no Secret referenced: where does the store's URL come from?")
	}
	// No Secret ships with the manifests (no password in git): each one a
	// pod needs must be one the README tells the operator to create.
	for _, ref := range sortedKeys(refs) {
		name, key, _ := strings.Cut(ref, "/")
		create := "kubectl -n " + r.Namespace + " create secret generic " + name
		if !strings.Contains(string(readme), create) || !strings.Contains(string(readme), "--from-literal="+key+"=") {
			t.Errorf("Secret %s (key %s) is not documented in README.md as `%s --from-literal=%s=...`", name, key, create, key)
		}
	}
}

func TestServicesSelectTheirPods(t *testing.T) {
	r := renderKustomization(t)
	want := map[string]string{"levee-smtp": "levee-smtpd", "levee-web": "levee-web"}
	if got := sortedKeys(r.Services); !slices.Equal(got, sortedKeys(want)) {
		t.Errorf("Services %v, want %v", got, sortedKeys(want))
	}
	for name, svc := range r.Services {
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s: empty selector", name)
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var matched []string
		for dn, d := range r.Deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = append(matched, dn)
			}
		}
		if len(matched) != 1 || matched[0] != want[name] {
			t.Errorf("Service %s selects the pods of %v, want only %s", name, matched, want[name])
			continue
		}
		c := r.Deployments[matched[0]].Spec.Template.Spec.Containers[0]
		for _, p := range svc.Spec.Ports {
			if _, ok := resolvePort(c, p.TargetPort); !ok {
				t.Errorf("Service %s port %s: targetPort %s is not a port of %s", name, p.Name, p.TargetPort.String(), matched[0])
			}
		}
	}
	if smtp := r.Services["levee-smtp"]; smtp != nil {
		if smtp.Spec.Type != corev1.ServiceTypeLoadBalancer || smtp.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Error("levee-smtp: want a LoadBalancer with externalTrafficPolicy Local (the per-IP limit and the Received header need the sender's address)")
		}
		if len(smtp.Spec.Ports) != 1 || smtp.Spec.Ports[0].Port != 25 {
			t.Error("levee-smtp: want port 25, where MTAs deliver")
		}
	}
}

func TestPodDisruptionBudgetsSelectExistingPods(t *testing.T) {
	r := renderKustomization(t)
	covered := map[string][]string{}
	for name, pdb := range r.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("PodDisruptionBudget %s: selector %v: %v", name, pdb.Spec.Selector, err)
			continue
		}
		var matched []string
		for dn, d := range r.Deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = append(matched, dn)
				covered[dn] = append(covered[dn], name)
			}
		}
		if len(matched) != 1 {
			t.Errorf("PodDisruptionBudget %s selects the pods of %v, want exactly one Deployment", name, matched)
			continue
		}
		// It must let a node drain make progress: at least one disruption.
		d := r.Deployments[matched[0]]
		replicas := int32(1)
		if d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		} else if so, ok := r.ScaledObjects[d.Name]; ok && so.Spec.MinReplicaCount != nil {
			replicas = *so.Spec.MinReplicaCount
		}
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			if v, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, int(replicas), true); err != nil || v < 1 {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %s allows no disruption", name, pdb.Spec.MaxUnavailable.String())
			}
		case pdb.Spec.MinAvailable != nil:
			if v, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, int(replicas), true); err != nil || v >= int(replicas) {
				t.Errorf("PodDisruptionBudget %s: minAvailable %s of %d replicas blocks every node drain", name, pdb.Spec.MinAvailable.String(), replicas)
			}
		default:
			t.Errorf("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", name)
		}
	}
	for dn := range r.Deployments {
		if len(covered[dn]) != 1 {
			t.Errorf("Deployment %s is covered by PodDisruptionBudgets %v, want exactly one", dn, covered[dn])
		}
	}
}

// quantity parses a Kubernetes quantity, failing the test on error.
func quantity(t *testing.T, what, s string) int64 {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, s, err)
	}
	return q.Value()
}
