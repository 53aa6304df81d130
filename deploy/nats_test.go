package deploy

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const natsValuesFile = "nats/values.yaml"

// natsChartValues mirrors the keys of the NATS Helm chart (1.x) that
// nats/values.yaml sets. Helm ignores a key the chart does not know (an
// old 0.x name such as nats.jetstream.fileStorage would silently leave
// JetStream on its defaults), so the file is decoded strictly against it.
type natsChartValues struct {
	FullnameOverride string `json:"fullnameOverride"`
	Config           struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled     bool `json:"enabled"`
			MemoryStore struct {
				Enabled bool   `json:"enabled"`
				MaxSize string `json:"maxSize,omitempty"`
			} `json:"memoryStore"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				MaxSize string `json:"maxSize"`
				PVC     struct {
					Enabled          bool    `json:"enabled"`
					Size             string  `json:"size"`
					StorageClassName *string `json:"storageClassName"`
				} `json:"pvc"`
			} `json:"fileStore"`
			Merge map[string]any `json:"merge,omitempty"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge struct {
			MaxPayload string `json:"max_payload"`
		} `json:"merge"`
	} `json:"config"`
	Container struct {
		Merge struct {
			Resources corev1.ResourceRequirements `json:"resources"`
		} `json:"merge"`
		Env map[string]string `json:"env"`
	} `json:"container"`
	PodTemplate struct {
		// The chart takes a map from topologyKey to the rest of the
		// constraint, and adds the key and its own label selector.
		TopologySpreadConstraints map[string]corev1.TopologySpreadConstraint `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
	PodDisruptionBudget struct {
		Enabled bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
	PromExporter struct {
		Enabled bool `json:"enabled"`
		Port    int  `json:"port"`
	} `json:"promExporter"`
	NatsBox struct {
		Enabled bool `json:"enabled"`
	} `json:"natsBox"`
}

var natsValuesRun = sync.OnceValues(func() (*natsChartValues, error) {
	data, err := os.ReadFile(natsValuesFile)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	v := &natsChartValues{}
	if err := decodeStrict(js, v); err != nil {
		return nil, err
	}
	return v, nil
})

func natsValues(t *testing.T) *natsChartValues {
	t.Helper()
	v, err := natsValuesRun()
	if err != nil {
		t.Fatalf("%s: %v", natsValuesFile, err)
	}
	return v
}

// maxPayload is config.merge.max_payload in bytes.
func (v *natsChartValues) maxPayload(t *testing.T) int64 {
	t.Helper()
	n, err := parseNATSSize(v.Config.Merge.MaxPayload)
	if err != nil {
		t.Fatalf("%s: config.merge.max_payload: %v", natsValuesFile, err)
	}
	return n
}

// parseNATSSize reads a size as nats-server's configuration parser does
// (conf/parse.go): k, m, g, t are powers of 1000; kb, ki, kib (and so on)
// powers of 1024. The chart passes "<< ... >>" through to the file as is.
func parseNATSSize(s string) (int64, error) {
	raw := s
	s = strings.TrimSpace(s)
	if inner, ok := strings.CutPrefix(s, "<<"); ok {
		inner, ok = strings.CutSuffix(inner, ">>")
		if !ok {
			return 0, fmt.Errorf("%q: unbalanced << >>", raw)
		}
		s = strings.TrimSpace(inner)
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: not a size", raw)
	}
	mult := map[string]int64{
		"": 1, "b": 1,
		"k": 1e3, "kb": 1 << 10, "ki": 1 << 10, "kib": 1 << 10,
		"m": 1e6, "mb": 1 << 20, "mi": 1 << 20, "mib": 1 << 20,
		"g": 1e9, "gb": 1 << 30, "gi": 1 << 30, "gib": 1 << 30,
		"t": 1e12, "tb": 1 << 40, "ti": 1 << 40, "tib": 1 << 40,
	}
	m, ok := mult[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit", raw)
	}
	return n * m, nil
}

func TestNATSValuesRunAReplicatedJetStream(t *testing.T) {
	v := natsValues(t)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas < 3 || c.Cluster.Replicas%2 == 0 {
		t.Errorf("cluster: enabled %t, replicas %d: want an odd number >= 3 (R3 streams need 3 voters)", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	js := c.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled {
		t.Error("jetstream: want it enabled with a file store on a persistent volume: an acknowledged message must survive a restart")
	}
	if js.MemoryStore.Enabled {
		t.Error("jetstream.memoryStore: Levee's streams are file-backed; a memory store only takes RAM")
	}
	if !c.Monitor.Enabled {
		t.Error("monitor: disabled, but KEDA's scaler and the probes read it")
	}
	if v.FullnameOverride == "" {
		t.Error("fullnameOverride: set it, so that the service names Levee and KEDA use do not depend on the release name")
	}
	if !v.PodDisruptionBudget.Enabled {
		t.Error("podDisruptionBudget: a drain could take two servers and the quorum")
	}
	hostname, ok := v.PodTemplate.TopologySpreadConstraints["kubernetes.io/hostname"]
	if !ok || hostname.WhenUnsatisfiable != corev1.DoNotSchedule || hostname.MaxSkew != 1 {
		t.Error("podTemplate.topologySpreadConstraints: want kubernetes.io/hostname, maxSkew 1, DoNotSchedule: two replicas of a stream on one node fail together")
	}

	// Storage: the stream's max_bytes is reserved against max_file_store,
	// and the volume must hold max_file_store.
	maxStore, err := parseNATSSize(js.FileStore.MaxSize)
	if err != nil {
		t.Fatalf("jetstream.fileStore.maxSize: %v", err)
	}
	if pvc := quantity(t, "jetstream.fileStore.pvc.size", js.FileStore.PVC.Size); pvc <= maxStore {
		t.Errorf("jetstream.fileStore.pvc.size %s is not above maxSize %s", js.FileStore.PVC.Size, js.FileStore.MaxSize)
	}
	r := renderKustomization(t)
	forEachContainer(r, func(_ *appsv1.Deployment, c corev1.Container, owner string) {
		env := envOf(t, r, owner, c)
		maxBytes, err := parseLeveeSize(env.vars["LEVEE_QUEUE_MAX_BYTES"])
		if err != nil {
			t.Errorf("%s: set LEVEE_QUEUE_MAX_BYTES explicitly: %v", owner, err)
			return
		}
		if maxBytes >= maxStore {
			t.Errorf("%s: LEVEE_QUEUE_MAX_BYTES %d is not below the NATS file store (%d): JetStream would refuse the stream", owner, maxBytes, maxStore)
		}
		u, err := url.Parse(env.vars["LEVEE_QUEUE_NATS_URL"])
		if err != nil || u.Hostname() != v.FullnameOverride || u.Port() != "4222" {
			t.Errorf("%s: LEVEE_QUEUE_NATS_URL %q: want nats://%s:4222, the chart's client service", owner, env.vars["LEVEE_QUEUE_NATS_URL"], v.FullnameOverride)
		}
	})

	// Memory: a limit, with GOMEMLIMIT below it.
	limit, ok := v.Container.Merge.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Error("container.merge.resources: no memory limit")
	} else if soft, err := parseGoMemLimit(v.Container.Env["GOMEMLIMIT"]); err != nil || soft >= limit.Value() {
		t.Errorf("container.env.GOMEMLIMIT %q must be below the memory limit %s", v.Container.Env["GOMEMLIMIT"], limit.String())
	}
	// max_payload may not exceed max_pending (64MB by default).
	if p := v.maxPayload(t); p > 64<<20 {
		t.Errorf("config.merge.max_payload %d exceeds the default max_pending (64MB)", p)
	}
}

func TestParseNATSSize(t *testing.T) {
	for in, want := range map[string]int64{
		"<< 17MB >>": 17 << 20, "<<17mb>>": 17 << 20, "1048576": 1 << 20, "20Gi": 20 << 30, "2k": 2000, "3G": 3e9,
	} {
		if got, err := parseNATSSize(in); err != nil || got != want {
			t.Errorf("parseNATSSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "<< 17MB", "17 parsecs"} {
		if _, err := parseNATSSize(in); err == nil {
			t.Errorf("parseNATSSize(%q): no error", in)
		}
	}
}
