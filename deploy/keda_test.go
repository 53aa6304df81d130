package deploy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScaledObject mirrors the fields of KEDA's keda.sh/v1alpha1 ScaledObject
// (apis/keda/v1alpha1/scaledobject_types.go) that this deployment may use.
// KEDA's CRDs have no types in k8s.io/api, and importing KEDA's module
// would pull in all of its scalers' clients; decoding strictly into this
// subset still catches a misspelt field, which KEDA would silently ignore.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ScaledObjectSpec `json:"spec"`
}

type ScaledObjectSpec struct {
	ScaleTargetRef        ScaleTarget     `json:"scaleTargetRef"`
	PollingInterval       *int32          `json:"pollingInterval,omitempty"`
	CooldownPeriod        *int32          `json:"cooldownPeriod,omitempty"`
	InitialCooldownPeriod *int32          `json:"initialCooldownPeriod,omitempty"`
	IdleReplicaCount      *int32          `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32          `json:"maxReplicaCount,omitempty"`
	Fallback              *Fallback       `json:"fallback,omitempty"`
	Advanced              *AdvancedConfig `json:"advanced,omitempty"`
	Triggers              []ScaleTrigger  `json:"triggers"`
}

type ScaleTarget struct {
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	Name                   string `json:"name"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type Fallback struct {
	FailureThreshold int32  `json:"failureThreshold"`
	Replicas         int32  `json:"replicas"`
	Behavior         string `json:"behavior,omitempty"`
}

type AdvancedConfig struct {
	HorizontalPodAutoscalerConfig *HPAConfig `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool       `json:"restoreToOriginalReplicaCount,omitempty"`
}

type HPAConfig struct {
	Name     string                                         `json:"name,omitempty"`
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
}

type ScaleTrigger struct {
	Type              string                         `json:"type"`
	Name              string                         `json:"name,omitempty"`
	Metadata          map[string]string              `json:"metadata"`
	MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
	UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
	AuthenticationRef *AuthenticationRef             `json:"authenticationRef,omitempty"`
}

type AuthenticationRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// natsJetStreamParams are the nats-jetstream scaler's metadata keys (KEDA
// docs, scalers/nats-jetstream): KEDA ignores any other key, so a typo
// such as lagTreshold would silently fall back to the default of 10.
var natsJetStreamParams = []string{
	"natsServerMonitoringEndpoint", "account", "stream", "consumer",
	"lagThreshold", "activationLagThreshold", "useHttps",
}

// workerTriggers returns the ScaledObject that scales the workers and its
// nats-jetstream triggers, one per partition of the mail queue, failing the
// test if there is not exactly one ScaledObject.
func workerTriggers(t *testing.T, r *rendered) (*ScaledObject, []ScaleTrigger) {
	t.Helper()
	if len(r.ScaledObjects) != 1 {
		t.Fatalf("want one ScaledObject, got %d", len(r.ScaledObjects))
	}
	for _, so := range r.ScaledObjects {
		var found []ScaleTrigger
		for _, tr := range so.Spec.Triggers {
			if tr.Type == "nats-jetstream" {
				found = append(found, tr)
			}
		}
		if len(found) == 0 {
			t.Fatalf("ScaledObject %s: no nats-jetstream trigger", so.Name)
		}
		return so, found
	}
	panic("unreachable")
}

// poolLagThreshold is the backlog one worker pod is for: a partition's
// lagThreshold times the partitions (each trigger sees its partition's
// share of the backlog; the HPA takes the largest ask).
func poolLagThreshold(t *testing.T, triggers []ScaleTrigger) float64 {
	t.Helper()
	lag, err := strconv.ParseFloat(triggers[0].Metadata["lagThreshold"], 64)
	if err != nil {
		t.Fatalf("ScaledObject lagThreshold %q: %v", triggers[0].Metadata["lagThreshold"], err)
	}
	return lag * float64(len(triggers))
}

func TestScaledObjectScalesTheWorkers(t *testing.T) {
	r := renderKustomization(t)
	l := leveeFacts(t)
	so, triggers := workerTriggers(t, r)
	spec := so.Spec

	ref := spec.ScaleTargetRef
	if (ref.Kind != "" && ref.Kind != "Deployment") || (ref.APIVersion != "" && ref.APIVersion != "apps/v1") {
		t.Errorf("scaleTargetRef: %s %s, want an apps/v1 Deployment", ref.APIVersion, ref.Kind)
	}
	d := r.Deployments[ref.Name]
	if d == nil {
		t.Fatalf("scaleTargetRef %q: no such Deployment", ref.Name)
	}
	if role := containerRole(d); role != "worker" {
		t.Errorf("scaleTargetRef %q runs `levee %s`, want `levee worker`", ref.Name, role)
	}
	// kubectl apply would reset the count KEDA's HPA set, on every apply.
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment %s sets spec.replicas (%d): leave it to the HPA", d.Name, *d.Spec.Replicas)
	}

	// Inside each pod the worker's own autoscaler keeps the store safe:
	// more pods must never mean unbounded load on the database.
	env := envOf(t, r, "Deployment "+d.Name, d.Spec.Template.Spec.Containers[0])
	if env.vars["LEVEE_WORKER_AUTOSCALE_ENABLED"] != "true" {
		t.Error("worker: LEVEE_WORKER_AUTOSCALE_ENABLED is not true: nothing would hold each pod under the store's latency budget")
	}
	if n, err := strconv.Atoi(env.vars["LEVEE_WORKER_AUTOSCALE_MAX"]); err != nil || n < 1 {
		t.Errorf("worker: LEVEE_WORKER_AUTOSCALE_MAX %q: set a per-pod ceiling (maxReplicaCount times it bounds the store's load)", env.vars["LEVEE_WORKER_AUTOSCALE_MAX"])
	}
	if n, err := strconv.Atoi(env.vars["LEVEE_WORKER_AUTOSCALE_MIN"]); err != nil || n < 1 {
		t.Errorf("worker: LEVEE_WORKER_AUTOSCALE_MIN %q: want >= 1, so that every worker pod drains", env.vars["LEVEE_WORKER_AUTOSCALE_MIN"])
	}

	// Fail closed: at least one worker always drains, whatever KEDA reads.
	if spec.MinReplicaCount == nil || *spec.MinReplicaCount < 1 {
		t.Error("minReplicaCount must be set and >= 1: a worker must always drain")
	}
	if spec.IdleReplicaCount != nil {
		t.Error("idleReplicaCount set: it would scale the workers to 0 when KEDA reads no lag")
	}
	if spec.MaxReplicaCount == nil || spec.MinReplicaCount == nil || *spec.MaxReplicaCount < *spec.MinReplicaCount {
		t.Error("maxReplicaCount must be set and >= minReplicaCount: it is what the store must take")
	}
	// Fail closed: a scaler error keeps the pool as it is (or lowers it),
	// it never scales up. kedacore/keda#7657.
	if f := spec.Fallback; f == nil {
		t.Error("no fallback: on a scaler error the HPA would act on stale metrics")
	} else {
		if !slices.Contains([]string{"currentReplicas", "currentReplicasIfLower"}, f.Behavior) {
			t.Errorf("fallback.behavior %q: want currentReplicas or currentReplicasIfLower, which never scale up on an error", f.Behavior)
		}
		if f.FailureThreshold < 1 || f.Replicas < 1 {
			t.Errorf("fallback: failureThreshold and replicas must be >= 1, got %d and %d", f.FailureThreshold, f.Replicas)
		}
	}
	// A bogus reading ramps up at a bounded rate.
	if a := spec.Advanced; a == nil || a.HorizontalPodAutoscalerConfig == nil || a.HorizontalPodAutoscalerConfig.Behavior == nil ||
		a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp == nil || len(a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp.Policies) == 0 {
		t.Error("no HPA scaleUp policies: a wrong lag reading would jump straight to maxReplicaCount")
	}

	// One trigger per partition, reading its stream and Levee's consumer,
	// all alike but for the stream.
	partitions, err := strconv.Atoi(env.vars["LEVEE_QUEUE_PARTITIONS"])
	if err != nil || partitions != len(triggers) {
		t.Fatalf("LEVEE_QUEUE_PARTITIONS %q, %d nats-jetstream triggers: want one trigger per partition", env.vars["LEVEE_QUEUE_PARTITIONS"], len(triggers))
	}
	for i, tr := range triggers {
		if want := fmt.Sprintf("%s_%d", l.stream, i); tr.Metadata["stream"] != want {
			t.Errorf("trigger %d reads stream %q, want %q", i, tr.Metadata["stream"], want)
		}
		for k, v := range tr.Metadata {
			if k != "stream" && triggers[0].Metadata[k] != v {
				t.Errorf("trigger %d: %s = %q, trigger 0 has %q", i, k, v, triggers[0].Metadata[k])
			}
		}
	}
	tr := triggers[0]
	for k := range tr.Metadata {
		if !slices.Contains(natsJetStreamParams, k) {
			t.Errorf("trigger metadata %q: not a nats-jetstream parameter (KEDA would ignore it)", k)
		}
	}
	want := map[string]string{"consumer": l.durable, "account": "$G"}
	for k, v := range want {
		if got := tr.Metadata[k]; got != v {
			t.Errorf("trigger %s = %q, want %q (queue/config.go)", k, got, v)
		}
	}
	if n, err := strconv.ParseInt(tr.Metadata["lagThreshold"], 10, 64); err != nil || n < 1 {
		t.Errorf("lagThreshold %q: want a positive integer", tr.Metadata["lagThreshold"])
	}
	if tr.AuthenticationRef != nil {
		t.Error("authenticationRef set, but the deployment ships no TriggerAuthentication")
	}
	if tr.MetricType != "" && tr.MetricType != autoscalingv2.AverageValueMetricType {
		t.Errorf("metricType %s: lagThreshold is a per-pod target (AverageValue)", tr.MetricType)
	}

	// The monitoring endpoint is the chart's headless service in this
	// namespace: KEDA finds the consumer's leader through it (a follower's
	// lag can be stale), and KEDA itself runs in another namespace.
	host, port, err := net.SplitHostPort(tr.Metadata["natsServerMonitoringEndpoint"])
	if err != nil {
		t.Fatalf("natsServerMonitoringEndpoint: %v", err)
	}
	nv := natsValues(t)
	if wantHost := nv.FullnameOverride + "-headless." + r.Namespace + ".svc.cluster.local"; host != wantHost {
		t.Errorf("natsServerMonitoringEndpoint host %q, want %q (the chart's headless service)", host, wantHost)
	}
	if wantPort := strconv.Itoa(nv.Config.Monitor.Port); port != wantPort {
		t.Errorf("natsServerMonitoringEndpoint port %s, but the NATS values serve monitoring on %s", port, wantPort)
	}
	if tr.Metadata["useHttps"] == "true" {
		t.Error("useHttps: the NATS values do not enable TLS on the monitoring port")
	}
}
