package admin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/fleet"
)

// Status is the queue's state for operators (web /api/v1/queue, `levee queue
// status`). Durations are nanoseconds in JSON, as in the JetStream API.
type Status struct {
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// FirstSeq and LastSeq are the stream's sequence range: LastSeq counts
	// every message ever accepted, and LastSeq-Messages those removed
	// (stored, or dead-lettered), which is what Rates differentiates.
	FirstSeq uint64       `json:"first_seq"`
	LastSeq  uint64       `json:"last_seq"`
	Limits   StreamLimits `json:"limits"`
	Fill     Fill         `json:"fill"`
	Consumer ConsumerStat `json:"consumer"`
	// OldestMessageAge is the age of the first message in the stream (from
	// its FirstTime); 0 when the stream is empty.
	OldestMessageAge time.Duration `json:"oldest_message_age"`
	DeadStream       string        `json:"dead_stream"`
	DeadLetters      uint64        `json:"dead_letters"`
	// TopDomains are the recipient domains with the most queued mail.
	TopDomains []DomainCount `json:"top_domains"`
	// Rates are zero unless the status came with a previous sample.
	Rates Rates `json:"rates"`
	// Workers and SMTP add up what the Levee processes that answered the
	// stats request reported (Processes).
	Workers   fleet.WorkerTotals `json:"workers"`
	SMTP      fleet.SMTPTotals   `json:"smtp"`
	Processes []fleet.Stats      `json:"processes"`
	// SyncAlways is the configured fsync policy; it describes the embedded
	// server (Embedded), an external one has its own.
	SyncAlways bool      `json:"sync_always"`
	Embedded   bool      `json:"embedded"`
	At         time.Time `json:"at"`
}

// StreamLimits are the mail stream's limits as the server has them.
type StreamLimits struct {
	MaxMsgs         int64         `json:"max_msgs"`
	MaxBytes        int64         `json:"max_bytes"`
	MaxAge          time.Duration `json:"max_age"`
	MaxMsgSize      int32         `json:"max_msg_size"`
	Discard         string        `json:"discard"`
	DuplicateWindow time.Duration `json:"duplicate_window"`
	Replicas        int           `json:"replicas"`
	// PerDomainMaxMsgs is the per-recipient-domain cap; 0 means none.
	PerDomainMaxMsgs int64 `json:"per_domain_max_msgs"`
}

// Fill is usage against each limit (0..1, or above 1 after a limit was
// lowered below current usage); Max is the larger, the one that refuses mail.
type Fill struct {
	Messages float64 `json:"messages"`
	Bytes    float64 `json:"bytes"`
	Max      float64 `json:"max"`
}

// ConsumerStat is the workers' consumer.
type ConsumerStat struct {
	Name           string `json:"name"`
	NumPending     uint64 `json:"num_pending"`
	NumAckPending  int    `json:"num_ack_pending"`
	NumRedelivered int    `json:"num_redelivered"`
	NumWaiting     int    `json:"num_waiting"`
}

// DomainCount is the queued messages of one recipient domain.
type DomainCount struct {
	Domain   string `json:"domain"`
	Messages uint64 `json:"messages"`
}

// topDomainsShown is how many domains Status lists, largest first.
const topDomainsShown = 10

// processWait is the longest Status waits for processes to answer. They
// answer from memory, so a live one answers within a round trip; Gather
// stops early once the answers stop coming.
const processWait = 250 * time.Millisecond

// Status reads fresh figures from the server: the mail stream with its
// per-domain counts, the consumer, the dead stream, and the Levee processes
// that answer on the stats subject (waiting processWait for them). Rates
// stay zero: they need two samples (see RatesBetween and Sampler).
func (a *Admin) Status(ctx context.Context) (Status, error) {
	s, err := a.js.Stream(ctx, a.cfg.Stream)
	if err != nil {
		return Status{}, fmt.Errorf("admin: stream info %s: %w", a.cfg.Stream, err)
	}
	c, err := a.js.Consumer(ctx, a.cfg.Stream, a.cfg.Durable)
	if err != nil {
		return Status{}, fmt.Errorf("admin: consumer info %s: %w", a.cfg.Durable, err)
	}
	d, err := a.js.Stream(ctx, a.cfg.DeadStream)
	if err != nil {
		return Status{}, fmt.Errorf("admin: stream info %s: %w", a.cfg.DeadStream, err)
	}
	st := a.statusFrom(a.withoutFreeze(s.CachedInfo()), c.CachedInfo(), d.CachedInfo(), time.Now())
	// Info with a subject filter returns the per-subject counts (one
	// subject per recipient domain); the plain info does not.
	si, err := s.Info(ctx, jetstream.WithSubjectFilter(a.cfg.SubjectPrefix+".>"))
	if err != nil {
		return Status{}, fmt.Errorf("admin: stream info %s: %w", a.cfg.Stream, err)
	}
	st.TopDomains = topDomains(si.State.Subjects, a.cfg.SubjectPrefix, topDomainsShown)
	procs, err := fleet.Gather(ctx, a.nc, a.cfg.Stream, processWait)
	if err != nil {
		a.log.Debug("admin: process stats", "err", err)
	}
	if procs != nil {
		st.Processes = procs
	}
	st.Workers, st.SMTP = fleet.Sum(procs)
	return st, nil
}

func (a *Admin) statusFrom(si *jetstream.StreamInfo, ci *jetstream.ConsumerInfo, di *jetstream.StreamInfo, now time.Time) Status {
	st := Status{
		Stream:      si.Config.Name,
		Messages:    si.State.Msgs,
		Bytes:       si.State.Bytes,
		FirstSeq:    si.State.FirstSeq,
		LastSeq:     si.State.LastSeq,
		Limits:      limitsOf(si.Config),
		Fill:        fillOf(si),
		DeadStream:  a.cfg.DeadStream,
		DeadLetters: di.State.Msgs,
		SyncAlways:  a.cfg.SyncAlways,
		Embedded:    a.cfg.URL == "",
		At:          now,
		TopDomains:  []DomainCount{},
		Processes:   []fleet.Stats{},
		Consumer: ConsumerStat{
			Name:           ci.Name,
			NumPending:     ci.NumPending,
			NumAckPending:  ci.NumAckPending,
			NumRedelivered: ci.NumRedelivered,
			NumWaiting:     ci.NumWaiting,
		},
	}
	if si.State.Msgs > 0 && !si.State.FirstTime.IsZero() {
		st.OldestMessageAge = max(0, now.Sub(si.State.FirstTime))
	}
	return st
}

func fillOf(si *jetstream.StreamInfo) Fill {
	var f Fill
	f.Messages, f.Bytes = queue.FillOf(si)
	f.Max = max(f.Messages, f.Bytes)
	return f
}

func topDomains(subjects map[string]uint64, prefix string, n int) []DomainCount {
	out := make([]DomainCount, 0, len(subjects))
	for subj, c := range subjects {
		d, ok := strings.CutPrefix(subj, prefix+".")
		if !ok || c == 0 {
			continue
		}
		out = append(out, DomainCount{Domain: d, Messages: c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Messages != out[j].Messages {
			return out[i].Messages > out[j].Messages
		}
		return out[i].Domain < out[j].Domain
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func limitsOf(sc jetstream.StreamConfig) StreamLimits {
	l := StreamLimits{
		MaxMsgs:         sc.MaxMsgs,
		MaxBytes:        sc.MaxBytes,
		MaxAge:          sc.MaxAge,
		MaxMsgSize:      sc.MaxMsgSize,
		Discard:         discardName(sc.Discard),
		DuplicateWindow: sc.Duplicates,
		Replicas:        sc.Replicas,
	}
	if sc.MaxMsgsPerSubject > 0 {
		l.PerDomainMaxMsgs = sc.MaxMsgsPerSubject
	}
	return l
}

// discardName spells the policy as the JetStream API does ("new", "old").
func discardName(d jetstream.DiscardPolicy) string {
	if d == jetstream.DiscardNew {
		return "new"
	}
	return "old"
}
