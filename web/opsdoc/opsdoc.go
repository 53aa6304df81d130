// Package opsdoc is the JSON of the ops API (GET /api/v1/queue and
// /api/v1/queue/limits, PUT /api/v1/queue/limits): the queue's figures of
// package queue/admin as the server writes them and the clients
// (web/opsclient, levee queue --json) read them. Every duration is a number
// of seconds in a field whose name ends in _seconds; an empty queue's
// first_seq is 0.
package opsdoc

import (
	"encoding/json"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
)

// Seconds is a duration written as a number of seconds.
type Seconds time.Duration

// MarshalJSON writes the duration in seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(s).Seconds())
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// hidden, never set, shadows a field of the embedded admin type whose
// JSON name it takes: admin writes durations in nanoseconds.
type hidden *struct{}

// Status is GET /api/v1/queue.
type Status struct {
	admin.Status
	// FirstSeq is 0 when the queue is empty (JetStream says LastSeq+1).
	FirstSeq         uint64  `json:"first_seq"`
	Limits           Limits  `json:"limits"`
	OldestMessageAge Seconds `json:"oldest_message_age_seconds"`
	HideOldestAge    hidden  `json:"oldest_message_age,omitempty"`
}

// Limits are the mail stream's limits (admin.StreamLimits).
type Limits struct {
	admin.StreamLimits
	MaxAge              Seconds `json:"max_age_seconds"`
	DuplicateWindow     Seconds `json:"duplicate_window_seconds"`
	HideMaxAge          hidden  `json:"max_age,omitempty"`
	HideDuplicateWindow hidden  `json:"duplicate_window,omitempty"`
}

// LimitsReport is GET /api/v1/queue/limits: the limits, and how they differ
// from the answering process's config.
type LimitsReport struct {
	Limits
	ComparedWithConfig bool               `json:"compared_with_config"`
	Drift              []queue.LimitDrift `json:"drift,omitempty"`
}

// LimitsUpdate is the answer to PUT /api/v1/queue/limits.
type LimitsUpdate struct {
	Limits Limits   `json:"limits"`
	Notes  []string `json:"notes,omitempty"`
}

// FromStatus is st as the API writes it.
func FromStatus(st admin.Status) Status {
	d := Status{Status: st, FirstSeq: st.FirstSeq, Limits: FromLimits(st.Limits), OldestMessageAge: Seconds(st.OldestMessageAge)}
	if st.Messages == 0 {
		d.FirstSeq = 0
	}
	return d
}

// Admin is the status d describes.
func (d Status) Admin() admin.Status {
	st := d.Status
	st.FirstSeq, st.Limits, st.OldestMessageAge = d.FirstSeq, d.Limits.Admin(), time.Duration(d.OldestMessageAge)
	if st.Messages == 0 {
		st.FirstSeq = st.LastSeq + 1
	}
	return st
}

// FromLimits is l as the API writes it.
func FromLimits(l admin.StreamLimits) Limits {
	return Limits{StreamLimits: l, MaxAge: Seconds(l.MaxAge), DuplicateWindow: Seconds(l.DuplicateWindow)}
}

// Admin is the limits d describes.
func (d Limits) Admin() admin.StreamLimits {
	l := d.StreamLimits
	l.MaxAge, l.DuplicateWindow = time.Duration(d.MaxAge), time.Duration(d.DuplicateWindow)
	return l
}

// FromLimitsReport is r as the API writes it.
func FromLimitsReport(r admin.LimitsReport) LimitsReport {
	return LimitsReport{Limits: FromLimits(r.StreamLimits), ComparedWithConfig: r.ComparedWithConfig, Drift: r.Drift}
}

// Admin is the report d describes.
func (d LimitsReport) Admin() admin.LimitsReport {
	return admin.LimitsReport{StreamLimits: d.Limits.Admin(), ComparedWithConfig: d.ComparedWithConfig, Drift: d.Drift}
}

// FromLimitsUpdate is u as the API writes it.
func FromLimitsUpdate(u admin.LimitsUpdate) LimitsUpdate {
	return LimitsUpdate{Limits: FromLimits(u.Limits), Notes: u.Notes}
}

// Admin is the update d describes.
func (d LimitsUpdate) Admin() admin.LimitsUpdate {
	return admin.LimitsUpdate{Limits: d.Limits.Admin(), Notes: d.Notes}
}
