package diskspace

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFloor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	free, err := Free(dir)
	if err != nil || free == 0 {
		t.Fatalf("Free(%s) = %d, %v", dir, free, err)
	}
	vols := []Volume{{Name: "jetstream", Path: dir}}
	for _, tc := range []struct {
		name  string
		min   uint64
		below bool
	}{
		{"off", 0, false},
		{"room to spare", 1, false},
		{"more than the disk", 1 << 62, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			f, err := NewFloor(FloorConfig{MinFree: tc.min, Volumes: vols, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			err = f.Below()
			if (err != nil) != tc.below {
				t.Fatalf("Below() = %v, want below %v", err, tc.below)
			}
			if err != nil && !strings.Contains(err.Error(), "jetstream volume") {
				t.Errorf("Below() = %v: should name the volume", err)
			}
			if got := testutil.ToFloat64(f.free.WithLabelValues("jetstream")); got <= 0 {
				t.Errorf("levee_disk_free_bytes = %v", got)
			}
		})
	}
}

func TestFreeOfAMissingPathFails(t *testing.T) {
	t.Parallel()
	if _, err := Free(t.TempDir() + "/missing"); err == nil {
		t.Fatal("Free of a missing path: no error")
	}
	// The floor keeps its last figure (none) and refuses nothing.
	f, err := NewFloor(FloorConfig{MinFree: 1 << 62, Volumes: []Volume{{Name: "store", Path: t.TempDir() + "/missing"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Below(); err != nil {
		t.Fatalf("Below() with an unmeasurable volume = %v, want nil", err)
	}
}
