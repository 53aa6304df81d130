package admin

import (
	"context"
	"fmt"
	"sort"
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
	// FirstSeq and LastSeq are the queue's sequence range, as if its
	// partitions were one stream: LastSeq counts every message ever
	// accepted, LastSeq-Messages those removed (stored, or dead-lettered),
	// which is what Rates differentiates, and FirstSeq is LastSeq-Messages+1.
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
	// Partitions are the mail streams' own figures, the layout's first.
	Partitions []PartitionStatus `json:"partitions"`
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

// PartitionStatus is one mail stream's own figures.
type PartitionStatus struct {
	Stream     string `json:"stream"`
	Messages   uint64 `json:"messages"`
	Bytes      uint64 `json:"bytes"`
	Fill       Fill   `json:"fill"`
	NumPending uint64 `json:"num_pending"`
	AckPending int    `json:"num_ack_pending"`
	// Draining: a stream of another layout, which mail is no longer
	// published to; the workers drain it.
	Draining bool `json:"draining,omitempty"`
}

// Status reads fresh figures from the server: the mail streams (every
// partition, and any of another layout still being drained) with their
// per-domain counts, the consumers, the dead stream, and the Levee
// processes that answer on the stats subject (waiting processWait for
// them). The queue's figures add the partitions up; its fill and limits
// are the layout's (see queue.SumLimits). Rates stay zero: they need two
// samples (see RatesBetween and Sampler).
func (a *Admin) Status(ctx context.Context) (Status, error) {
	layout, err := a.layout(ctx)
	if err != nil {
		return Status{}, err
	}
	existing, err := queue.ExistingMailStreams(ctx, a.js, a.cfg)
	if err != nil {
		return Status{}, fmt.Errorf("admin: %w", err)
	}
	parts := queue.Union(layout, existing)
	d, err := a.js.Stream(ctx, a.cfg.DeadStream)
	if err != nil {
		return Status{}, fmt.Errorf("admin: stream info %s: %w", a.cfg.DeadStream, err)
	}
	now := time.Now()
	st := Status{
		Stream: a.cfg.Stream, DeadStream: a.cfg.DeadStream, DeadLetters: d.CachedInfo().State.Msgs,
		SyncAlways: a.cfg.SyncAlways, Embedded: a.cfg.URL == "", At: now,
		Consumer:   ConsumerStat{Name: a.cfg.Durable},
		TopDomains: []DomainCount{}, Processes: []fleet.Stats{}, Partitions: []PartitionStatus{},
	}
	nLayout := len(layout)
	var layoutConfigs []jetstream.StreamConfig
	var layoutMsgs, layoutBytes uint64
	domains := map[string]uint64{}
	for i, p := range parts {
		ps, info, ci, err := a.partitionStatus(ctx, p, domains)
		if err != nil {
			return Status{}, err
		}
		ps.Draining = i >= nLayout
		st.add(ps, info, ci, now)
		if !ps.Draining {
			layoutConfigs = append(layoutConfigs, info.Config)
			layoutMsgs += info.State.Msgs
			layoutBytes += info.State.Bytes
		}
		st.Partitions = append(st.Partitions, ps)
	}
	total := queue.SumLimits(layoutConfigs)
	st.Limits = limitsOf(total)
	st.Fill = fillOf(&jetstream.StreamInfo{Config: total, State: jetstream.StreamState{Msgs: layoutMsgs, Bytes: layoutBytes}})
	st.TopDomains = topOf(domains, topDomainsShown)
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

// partitionStatus reads one mail stream with its per-domain counts (added
// to domains) and its consumer.
func (a *Admin) partitionStatus(ctx context.Context, p queue.Partition, domains map[string]uint64) (
	PartitionStatus, *jetstream.StreamInfo, *jetstream.ConsumerInfo, error) {
	s, err := a.js.Stream(ctx, p.Stream)
	if err != nil {
		return PartitionStatus{}, nil, nil, fmt.Errorf("admin: stream info %s: %w", p.Stream, err)
	}
	c, err := a.js.Consumer(ctx, p.Stream, a.cfg.Durable)
	if err != nil {
		return PartitionStatus{}, nil, nil, fmt.Errorf("admin: consumer info %s on %s: %w", a.cfg.Durable, p.Stream, err)
	}
	// Info with a subject filter returns the per-subject counts (one
	// subject per recipient domain); the plain info does not.
	si, err := s.Info(ctx, jetstream.WithSubjectFilter(p.Prefix+".>"))
	if err != nil {
		return PartitionStatus{}, nil, nil, fmt.Errorf("admin: stream info %s: %w", p.Stream, err)
	}
	for subj, n := range si.State.Subjects {
		if d := a.cfg.DomainOf(subj); d != "" {
			domains[d] += n
		}
	}
	info, ci := a.withoutFreeze(s.CachedInfo()), c.CachedInfo()
	return PartitionStatus{
		Stream: p.Stream, Messages: info.State.Msgs, Bytes: info.State.Bytes, Fill: fillOf(info),
		NumPending: ci.NumPending, AckPending: ci.NumAckPending,
	}, info, ci, nil
}

// add counts one mail stream into the queue's figures. Last sequences add
// up: LastSeq counts every message ever accepted into any of them. First
// sequences do not (four empty partitions after three messages would read
// 5..3), so FirstSeq follows from LastSeq and Messages.
func (st *Status) add(ps PartitionStatus, info *jetstream.StreamInfo, ci *jetstream.ConsumerInfo, now time.Time) {
	st.Messages += info.State.Msgs
	st.Bytes += info.State.Bytes
	st.LastSeq += info.State.LastSeq
	st.FirstSeq = st.LastSeq - min(st.Messages, st.LastSeq) + 1
	if info.State.Msgs > 0 && !info.State.FirstTime.IsZero() {
		st.OldestMessageAge = max(st.OldestMessageAge, now.Sub(info.State.FirstTime))
	}
	st.Consumer.NumPending += ci.NumPending
	st.Consumer.NumAckPending += ci.NumAckPending
	st.Consumer.NumRedelivered += ci.NumRedelivered
	st.Consumer.NumWaiting += ci.NumWaiting
}

func fillOf(si *jetstream.StreamInfo) Fill {
	var f Fill
	f.Messages, f.Bytes = queue.FillOf(si)
	f.Max = max(f.Messages, f.Bytes)
	return f
}

// topOf is the n domains with the most queued mail, largest first.
func topOf(counts map[string]uint64, n int) []DomainCount {
	out := make([]DomainCount, 0, len(counts))
	for d, c := range counts {
		if c > 0 {
			out = append(out, DomainCount{Domain: d, Messages: c})
		}
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

// topDomains is topOf the per-subject counts of one mail stream.
func (a *Admin) topDomains(subjects map[string]uint64, n int) []DomainCount {
	counts := map[string]uint64{}
	for subj, c := range subjects {
		if d := a.cfg.DomainOf(subj); d != "" {
			counts[d] += c
		}
	}
	return topOf(counts, n)
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
