package deploy

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const kustomizeDir = "kubernetes"

// rendered is the kustomization's output, every object decoded into its
// API type, by name.
type rendered struct {
	Namespace       string // the one Namespace object
	Namespaces      map[string]*corev1.Namespace
	ServiceAccounts map[string]*corev1.ServiceAccount
	ConfigMaps      map[string]*corev1.ConfigMap
	Services        map[string]*corev1.Service
	Deployments     map[string]*appsv1.Deployment
	PDBs            map[string]*policyv1.PodDisruptionBudget
	ScaledObjects   map[string]*ScaledObject
	// Objects lists every object as "Kind/name" in render order.
	Objects []string
}

var renderRun = sync.OnceValues(func() (*rendered, error) { return render(kustomizeDir) })

func renderKustomization(t *testing.T) *rendered {
	t.Helper()
	r, err := renderRun()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", kustomizeDir, err)
	}
	return r
}

// render runs `kustomize build dir` with kustomize's own library and
// decodes each object strictly: an unknown or misspelt field, a duplicate
// key, a value of the wrong type, or a kind this deployment does not
// expect fails the render.
func render(dir string) (*rendered, error) { return renderFS(filesys.MakeFsOnDisk(), dir) }

// renderFS is render on a file system of the test's making (an overlay).
func renderFS(fsys filesys.FileSystem, dir string) (*rendered, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(fsys, dir)
	if err != nil {
		return nil, err
	}
	r := &rendered{
		Namespaces:      map[string]*corev1.Namespace{},
		ServiceAccounts: map[string]*corev1.ServiceAccount{},
		ConfigMaps:      map[string]*corev1.ConfigMap{},
		Services:        map[string]*corev1.Service{},
		Deployments:     map[string]*appsv1.Deployment{},
		PDBs:            map[string]*policyv1.PodDisruptionBudget{},
		ScaledObjects:   map[string]*ScaledObject{},
	}
	var errs []error
	for _, res := range resMap.Resources() {
		kind, name := res.GetKind(), res.GetName()
		id := res.GetApiVersion() + " " + kind + "/" + name
		data, err := res.MarshalJSON()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			continue
		}
		var dup bool
		switch res.GetApiVersion() + " " + kind {
		case "v1 Namespace":
			dup = decodeInto(r.Namespaces, name, data, &errs, id)
			r.Namespace = name
		case "v1 ServiceAccount":
			dup = decodeInto(r.ServiceAccounts, name, data, &errs, id)
		case "v1 ConfigMap":
			dup = decodeInto(r.ConfigMaps, name, data, &errs, id)
		case "v1 Service":
			dup = decodeInto(r.Services, name, data, &errs, id)
		case "apps/v1 Deployment":
			dup = decodeInto(r.Deployments, name, data, &errs, id)
		case "policy/v1 PodDisruptionBudget":
			dup = decodeInto(r.PDBs, name, data, &errs, id)
		case "keda.sh/v1alpha1 ScaledObject":
			dup = decodeInto(r.ScaledObjects, name, data, &errs, id)
		default:
			errs = append(errs, fmt.Errorf("%s: a kind this test does not know: add its API type to render()", id))
		}
		if dup {
			errs = append(errs, fmt.Errorf("%s: rendered twice", id))
		}
		r.Objects = append(r.Objects, kind+"/"+name)
	}
	if len(r.Namespaces) != 1 {
		errs = append(errs, fmt.Errorf("want exactly one Namespace object, got %d", len(r.Namespaces)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeInto[T any](m map[string]*T, name string, data []byte, errs *[]error, id string) (duplicate bool) {
	obj := new(T)
	if err := decodeStrict(data, obj); err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %w", id, err))
		return false
	}
	_, duplicate = m[name]
	m[name] = obj
	return duplicate
}

// decodeStrict is the API server's strict decoding: case-sensitive field
// names, and an error for unknown or duplicate fields (encoding/json
// alone would match "Replicas" to replicas and drop what it does not know).
func decodeStrict(data []byte, into any) error {
	strictErrs, err := sigsjson.UnmarshalStrict(data, into, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

func TestKustomizationRendersAndDecodesStrictly(t *testing.T) {
	r := renderKustomization(t)
	t.Logf("rendered %d objects: %v", len(r.Objects), r.Objects)
	// What the issue asks for, by role.
	for _, name := range []string{"levee-smtpd", "levee-worker", "levee-web"} {
		if r.Deployments[name] == nil {
			t.Errorf("no Deployment %s", name)
		}
	}
	if r.Services["levee-smtp"] == nil || r.Services["levee-web"] == nil {
		t.Error("want Services levee-smtp and levee-web")
	}
	if len(r.ConfigMaps) == 0 {
		t.Error("no ConfigMap")
	}
	if r.ScaledObjects["levee-worker"] == nil {
		t.Error("no ScaledObject levee-worker")
	}
	// Everything but the Namespace itself lands in it.
	check := func(kind, name, ns string) {
		if ns != r.Namespace {
			t.Errorf("%s/%s: namespace %q, want %q", kind, name, ns, r.Namespace)
		}
	}
	for n, o := range r.ServiceAccounts {
		check("ServiceAccount", n, o.Namespace)
	}
	for n, o := range r.ConfigMaps {
		check("ConfigMap", n, o.Namespace)
	}
	for n, o := range r.Services {
		check("Service", n, o.Namespace)
	}
	for n, o := range r.Deployments {
		check("Deployment", n, o.Namespace)
	}
	for n, o := range r.PDBs {
		check("PodDisruptionBudget", n, o.Namespace)
	}
	for n, o := range r.ScaledObjects {
		check("ScaledObject", n, o.Namespace)
	}
}

// TestStrictDecodingCatchesMistakes proves the decoder is as strict as the
// other tests rely on: each of these would be accepted by a lenient one.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replica":2}}`,
		"wrong case":      `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"Replicas":2}}`,
		"duplicate field": `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":2,"replicas":3}}`,
		"wrong type":      `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"2"}}`,
	} {
		var d appsv1.Deployment
		if err := decodeStrict([]byte(doc), &d); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	var so ScaledObject
	if err := decodeStrict([]byte(`{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","metadata":{"name":"x"},"spec":{"scaleTargetRef":{"name":"x"},"minReplicas":1}}`), &so); err == nil {
		t.Error("ScaledObject with a misspelt field decoded without error")
	}
}
