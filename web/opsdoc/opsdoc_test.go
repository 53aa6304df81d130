package opsdoc

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
)

// TestDurationsInSecondsAndRoundTrip: what the API writes has every
// duration in seconds under a _seconds name, no nanosecond twin, an empty
// queue's first_seq 0; and a client reads back the status it came from.
func TestDurationsInSecondsAndRoundTrip(t *testing.T) {
	lim := admin.StreamLimits{MaxMsgs: 10, MaxBytes: 1 << 20, MaxAge: 168 * time.Hour, MaxMsgSize: 1 << 16,
		Discard: "new", DuplicateWindow: 10 * time.Minute, Replicas: 1}
	st := admin.Status{Stream: "LEVEE_MAIL", FirstSeq: 2, LastSeq: 1, Limits: lim,
		Rates: admin.Rates{WindowSeconds: 5, Ingest: 1}, At: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	raw, err := json.Marshal(FromStatus(st))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	limits := m["limits"].(map[string]any)
	for _, c := range []struct {
		key  string
		got  any
		want float64
	}{
		{"limits.max_age_seconds", limits["max_age_seconds"], 604800},
		{"limits.duplicate_window_seconds", limits["duplicate_window_seconds"], 600},
		{"oldest_message_age_seconds", m["oldest_message_age_seconds"], 0},
		{"first_seq of an empty queue", m["first_seq"], 0},
		{"last_seq", m["last_seq"], 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.key, c.got, c.want)
		}
	}
	for _, gone := range []string{"max_age", "duplicate_window"} {
		if _, ok := limits[gone]; ok {
			t.Errorf("limits.%s (nanoseconds) still written: %s", gone, raw)
		}
	}
	if _, ok := m["oldest_message_age"]; ok {
		t.Errorf("oldest_message_age (nanoseconds) still written: %s", raw)
	}
	var back Status
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Admin(); !reflect.DeepEqual(got, st) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, st)
	}

	busy := st
	busy.Messages, busy.FirstSeq, busy.LastSeq, busy.OldestMessageAge = 3, 5, 7, 1500*time.Millisecond
	raw, _ = json.Marshal(FromStatus(busy))
	m = nil
	_ = json.Unmarshal(raw, &m)
	if m["first_seq"] != 5.0 || m["oldest_message_age_seconds"] != 1.5 {
		t.Errorf("first_seq %v, oldest_message_age_seconds %v; want 5 and 1.5", m["first_seq"], m["oldest_message_age_seconds"])
	}

	rep := admin.LimitsReport{StreamLimits: lim, ComparedWithConfig: true, Drift: []queue.LimitDrift{{Key: "max_age", Live: "168h", Config: "48h"}}}
	raw, _ = json.Marshal(FromLimitsReport(rep))
	m = nil
	_ = json.Unmarshal(raw, &m)
	if _, ok := m["max_age"]; ok || m["max_age_seconds"] != 604800.0 {
		t.Errorf("limits report: %s", raw)
	}
	var repBack LimitsReport
	if err := json.Unmarshal(raw, &repBack); err != nil || !reflect.DeepEqual(repBack.Admin(), rep) {
		t.Errorf("limits report round trip: %+v (%v)", repBack.Admin(), err)
	}
}
