package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/levee-mail/levee/internal/bytesize"
)

// streamConfig is the mail stream as this config would create it with one
// partition: the limits are the totals. Work-queue retention: a message
// leaves the stream when a worker acks it (after the store's commit), so
// the limits measure the backlog, not history. DiscardNew: at a limit the
// stream refuses new mail, so the sender gets a 4xx and retries, instead of
// JetStream silently deleting the oldest queued (already accepted) mail.
// AllowAtomicPublish enables group commit.
func (c Config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:                 c.Stream,
		Description:          "Levee inbound mail, published after SMTP DATA and drained by the workers",
		Subjects:             []string{c.SubjectPrefix + ".>"},
		Retention:            jetstream.WorkQueuePolicy,
		Storage:              jetstream.FileStorage,
		Discard:              jetstream.DiscardNew,
		MaxMsgs:              c.MaxMsgs,
		MaxBytes:             c.MaxBytes,
		MaxAge:               c.MaxAge,
		MaxMsgSize:           c.MaxMsgSize,
		MaxMsgsPerSubject:    c.perSubjectLimit(),
		DiscardNewPerSubject: c.PerDomainMaxMsgs > 0,
		MaxConsumers:         -1,
		Duplicates:           c.DuplicateWindow,
		Replicas:             c.Replicas,
		AllowAtomicPublish:   true,
	}
}

// partitionConfig is partition p's stream as this config would create it:
// its name and subjects, and its share of the total limits (see share;
// max_age and max_msg_size apply to each message, so every partition has
// them whole).
func (c Config) partitionConfig(p Partition) jetstream.StreamConfig {
	sc := c.streamConfig()
	n := len(c.Layout())
	sc.Name, sc.Subjects = p.Stream, []string{p.Prefix + ".>"}
	sc.MaxMsgs = Share(c.MaxMsgs, p.Index, n)
	sc.MaxBytes = Share(c.MaxBytes, p.Index, n)
	if c.PerDomainMaxMsgs > 0 {
		sc.MaxMsgsPerSubject = Share(c.PerDomainMaxMsgs, p.Index, n)
	}
	sc.Metadata = map[string]string{MetadataLayout: strconv.Itoa(n)}
	return sc
}

// drainingConfig is what a start wants of a mail stream of another
// layout: as partitionConfig, marked draining.
func (c Config) drainingConfig(p Partition) jetstream.StreamConfig {
	sc := c.partitionConfig(p)
	sc.Metadata = map[string]string{MetadataLayout: layoutDraining}
	return sc
}

// SumLimits is the queue's limits as a whole, from its partitions' live
// configs: messages, bytes and the per-domain cap add up over the
// partitions; max_age and max_msg_size are the tightest of them (the one
// that refuses mail first). The other fields are the first partition's.
func SumLimits(parts []jetstream.StreamConfig) jetstream.StreamConfig {
	if len(parts) == 0 {
		return jetstream.StreamConfig{}
	}
	sum := parts[0]
	for _, sc := range parts[1:] {
		if mark, frozen := sc.Metadata[MetadataIntakeFreeze]; frozen {
			sum.Metadata = maps.Clone(sum.Metadata)
			if sum.Metadata == nil {
				sum.Metadata = map[string]string{}
			}
			sum.Metadata[MetadataIntakeFreeze] = mark
		}
		sum.MaxMsgs += sc.MaxMsgs
		sum.MaxBytes += sc.MaxBytes
		sum.MaxAge = min(sum.MaxAge, sc.MaxAge)
		sum.MaxMsgSize = min(sum.MaxMsgSize, sc.MaxMsgSize)
		if sum.MaxMsgsPerSubject > 0 && sc.MaxMsgsPerSubject > 0 {
			sum.MaxMsgsPerSubject += sc.MaxMsgsPerSubject
		} else {
			sum.MaxMsgsPerSubject, sum.DiscardNewPerSubject = -1, false
		}
	}
	return sum
}

// perSubjectLimit is the per-domain cap in JetStream's terms: each recipient
// domain is one subject, and -1 means unlimited.
func (c Config) perSubjectLimit() int64 {
	if c.PerDomainMaxMsgs > 0 {
		return c.PerDomainMaxMsgs
	}
	return -1
}

// deadStreamConfig keeps dead-lettered mail for an operator to inspect or
// replay, for DeadMaxAge. It refuses new copies when over its byte budget
// rather than dropping old ones: a dead letter is accepted mail, and when
// the copy cannot be made the worker leaves the message in the mail stream.
//
// Its budget is a tenth of the mail stream's (at least 64 MiB, at most all
// of it): JetStream reserves a stream's MaxBytes on every server that holds
// it, and dead letters are rare, so an equal budget would halve the room the
// mail stream can be raised into live.
func (c Config) deadStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              c.DeadStream,
		Description:       "Levee mail the workers gave up on, with the reason in Levee-Dead-Reason",
		Subjects:          []string{c.DeadSubjectPrefix + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardNew,
		MaxMsgs:           -1,
		MaxBytes:          c.deadMaxBytes(),
		MaxAge:            c.DeadMaxAge,
		MaxMsgsPerSubject: -1,
		MaxConsumers:      -1,
		Duplicates:        min(c.DuplicateWindow, c.DeadMaxAge),
		Replicas:          c.Replicas,
	}
}

func (c Config) deadMaxBytes() int64 {
	return min(c.MaxBytes, max(c.MaxBytes/10, 64<<20))
}

// consumerConfig is the workers' durable pull consumer on partition p.
//
// MaxDeliver is -1 (unlimited) on purpose. Were it cfg.MaxDeliver, the
// server would stop delivering a message after the last attempt and leave it
// in the stream, counted as pending by nobody and stored by no one: mail
// lost in plain sight. Instead each Delivery says its attempt and the
// limit, and the worker gives a message up at the limit (GiveUp:
// dead-lettered with a reason, then terminated), so every message ends up
// either stored or in the dead stream.
//
// JetStream's BackOff replaces AckWait: entry i is the ack wait of delivery
// i+1. Levee's Backoff is the delay after AckWait ran out, so each entry
// given to the server is AckWait + Backoff[i]; the worker keeps its full
// AckWait to process a message.
func (c Config) consumerConfig(p Partition) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   "Levee workers",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		FilterSubject: p.Prefix + ".>",
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxAckPending: c.MaxAckPending,
		Replicas:      c.Replicas,
	}
	if len(c.Backoff) > 0 {
		cc.BackOff = make([]time.Duration, len(c.Backoff))
		for i, b := range c.Backoff {
			cc.BackOff[i] = c.AckWait + b
		}
		cc.AckWait = cc.BackOff[0]
	}
	return cc
}

// MetadataLayout is the mail stream's metadata key that says which layout
// the stream belongs to: the partition count of the layout the last start
// set it up for, or "draining" once a start set up another layout without
// it. Tools with no config (`levee queue` straight through JetStream) find
// the current layout by it, and a start sees by it that a stream joins a
// layout of another partition count, whose share of the limits it then
// takes. A stream without it (an older Levee's single stream) keeps its
// live limits.
const MetadataLayout = "levee.layout"

// layoutDraining marks a mail stream of another layout (MetadataLayout).
const layoutDraining = "draining"

// MetadataIntakeFreeze is the mail stream's metadata key that marks a
// moment's intake freeze (max_msgs 1 while a lowered per-domain cap is
// checked and applied; see the admin package). While it is there, max_msgs
// is not the real limit: the queue neither reads its fill from it nor
// writes the stream's config.
const MetadataIntakeFreeze = "levee.intake_freeze"

// ensure creates the streams and the consumers, or brings them in line
// with the config. The mail streams' limits have one writer: a start
// applies the config's limits only when it creates a stream; otherwise they
// stay as they are live (an operator's `levee queue limits set` outlasts
// restarts and every process started with another config), and a
// difference is reported as drift. The dead stream and the consumers follow
// the config.
//
// Mail streams of another layout (a changed queue.partitions, or the single
// stream of an older Levee) are kept and drained: the workers fetch from
// every mail stream there is, and mail is published only to the layout's.
func (q *Queue) ensure(ctx context.Context) error {
	var totals Config
	if err := retryUnready(ctx, func(ctx context.Context) (err error) {
		totals, err = q.layoutTotals(ctx)
		return err
	}); err != nil {
		return err
	}
	var live []jetstream.StreamConfig
	for _, p := range q.layout {
		var info *jetstream.StreamInfo
		err := retryUnready(ctx, func(ctx context.Context) (err error) {
			info, err = q.ensureMailStream(ctx, totals.partitionConfig(p))
			return err
		})
		if err != nil {
			return fmt.Errorf("queue: stream %s: %w", p.Stream, err)
		}
		live = append(live, info.Config)
		if q.batching && !info.Config.AllowAtomicPublish {
			q.batching = false
			q.log.Warn("queue: the server does not support atomic batch publish (nats-server >= 2.12); publishing one message at a time")
		}
	}
	q.reportDrift(live)
	var parts []Partition
	if err := retryUnready(ctx, func(ctx context.Context) (err error) {
		parts, err = MailStreams(ctx, q.js, q.cfg)
		return err
	}); err != nil {
		return err
	}
	q.setMailStreams(parts)
	for _, p := range parts[len(q.layout):] {
		q.log.Info("queue: draining a mail stream of another layout; no mail is published to it", "stream", p.Stream)
		if err := retryUnready(ctx, func(ctx context.Context) error {
			_, err := q.ensureMailStream(ctx, q.cfg.drainingConfig(p))
			return err
		}); err != nil {
			return fmt.Errorf("queue: stream %s: %w", p.Stream, err)
		}
	}
	if err := retryUnready(ctx, func(ctx context.Context) error {
		_, err := q.js.CreateOrUpdateStream(ctx, q.cfg.deadStreamConfig())
		return err
	}); err != nil {
		return fmt.Errorf("queue: dead stream %s: %w", q.cfg.DeadStream, err)
	}
	for _, p := range parts {
		if err := retryUnready(ctx, func(ctx context.Context) error {
			_, err := q.js.CreateOrUpdateConsumer(ctx, p.Stream, q.cfg.consumerConfig(p))
			return err
		}); err != nil {
			return fmt.Errorf("queue: consumer %s on %s: %w", q.cfg.Durable, p.Stream, err)
		}
	}
	return nil
}

// layoutTotals is the config with the limits the layout's streams take
// their shares of when they are new to it: the configured totals, or, when
// this start changes the layout (queue.partitions changed, or an older
// Levee's single stream is there), the previous layout's live totals, so
// that a live change outlasts a change of the partition count as it
// outlasts restarts.
func (q *Queue) layoutTotals(ctx context.Context) (Config, error) {
	existing, configs, err := existingMailConfigs(ctx, q.js, q.cfg)
	if err != nil {
		return Config{}, err
	}
	n := strconv.Itoa(len(q.layout))
	var prev []jetstream.StreamConfig
	for i, p := range existing {
		sc := configs[i]
		mark, ok := sc.Metadata[MetadataLayout]
		if !ok && p.Stream == q.cfg.Stream {
			mark = "1" // an older Levee's single stream
		}
		if !ok && p.Stream != q.cfg.Stream || mark == layoutDraining || mark == n {
			continue
		}
		if _, frozen := sc.Metadata[MetadataIntakeFreeze]; frozen {
			q.log.Warn("queue: the previous layout's limits are being changed; the new layout takes the configured limits", "stream", p.Stream)
			return q.cfg, nil
		}
		prev = append(prev, sc)
	}
	if len(prev) == 0 {
		return q.cfg, nil
	}
	sum := SumLimits(prev)
	t := q.cfg
	t.MaxMsgs, t.MaxBytes, t.PerDomainMaxMsgs = sum.MaxMsgs, sum.MaxBytes, max(sum.MaxMsgsPerSubject, 0)
	if err := t.Validate(); err != nil {
		q.log.Warn("queue: the previous layout's live limits do not suit the new one; it takes the configured limits", "err", err)
		return q.cfg, nil
	}
	q.log.Info("queue: the layout changes; its streams take their shares of the previous layout's live limits",
		"partitions", len(q.layout), "max_msgs", t.MaxMsgs, "max_bytes", t.MaxBytes, "per_domain_max_msgs", t.PerDomainMaxMsgs)
	return t, nil
}

// reportDrift logs how the live limits of the layout's partitions, as a
// whole, differ from the config's.
func (q *Queue) reportDrift(live []jetstream.StreamConfig) {
	drift := q.cfg.Drift(SumLimits(live))
	if len(drift) == 0 {
		return
	}
	list := make([]string, len(drift))
	for i, d := range drift {
		list[i] = d.String()
	}
	q.log.Warn("queue: the stream's live limits differ from the config; a start leaves live limits as they are (change them with `levee queue limits set`)",
		"stream", q.cfg.Stream, "drift", strings.Join(list, "; "))
}

// ensureMailStream creates a mail stream as want says, or, when it exists,
// updates what Levee decides about it besides the limits (subjects,
// policies, duplicate window, replicas, atomic publish) if the config
// changed any of that, keeping the live limits and metadata.
func (q *Queue) ensureMailStream(ctx context.Context, want jetstream.StreamConfig) (*jetstream.StreamInfo, error) {
	s, err := q.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Two processes starting at once may both get here: creating the
		// same config twice is fine, and a loser with another config gets
		// "already in use", which the next attempt reads as existing.
		if s, err = q.js.CreateStream(ctx, want); err == nil {
			return s.CachedInfo(), nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = fmt.Errorf("%w: %w", errStartRace, err)
		}
	}
	if err != nil {
		return nil, err
	}
	live := s.CachedInfo()
	update := keepLimits(want, live.Config)
	if was, ok := live.Config.Metadata[MetadataLayout]; ok && was != want.Metadata[MetadataLayout] && want.Metadata[MetadataLayout] != layoutDraining {
		// The stream joins another layout (queue.partitions changed): its
		// live limits were a share for the old one, so it takes the
		// config's share for the new, or the queue's total would change
		// with the partition count.
		q.log.Info("queue: a mail stream joins a layout of another partition count and takes its share of the configured limits",
			"stream", want.Name, "partitions_before", was, "partitions", want.Metadata[MetadataLayout])
		update.MaxMsgs, update.MaxBytes, update.MaxMsgsPerSubject = want.MaxMsgs, want.MaxBytes, want.MaxMsgsPerSubject
		update.DiscardNewPerSubject = want.DiscardNewPerSubject
	}
	if v, ok := want.Metadata[MetadataLayout]; ok {
		if update.Metadata == nil {
			update.Metadata = map[string]string{}
		}
		update.Metadata[MetadataLayout] = v
	}
	if reflect.DeepEqual(update, live.Config) {
		return live, nil
	}
	if _, frozen := live.Config.Metadata[MetadataIntakeFreeze]; frozen {
		// A live limit change is in progress and will write the whole
		// config back: leave it alone, the next start updates.
		q.log.Warn("queue: a stream's settings differ from the config, but a limit change is in progress; the next start updates them", "stream", want.Name)
		return live, nil
	}
	if s, err = q.js.UpdateStream(ctx, update); err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// errStartRace: another process created the stream at the same moment with
// another config; the start reads it again (retryUnready).
var errStartRace = errors.New("queue: stream created meanwhile by another process")

// legacyMetadata are stream metadata keys an earlier Levee wrote, when
// every start wrote the limits; a start that updates the stream drops them.
var legacyMetadata = []string{"levee.configured_limits", "levee.withheld_limits"}

// keepLimits is the live config with what the config decides apart from
// the limits: the update a start may make. Fields the server fills in
// itself stay as it has them. (The update writes back the limits it read
// a round trip before: a live change landing in between would be undone,
// last writer wins, as between two live changes that do not freeze. It
// happens only when a start changes what is not a limit.)
func keepLimits(want, live jetstream.StreamConfig) jetstream.StreamConfig {
	u := live
	if len(live.Metadata) > 0 {
		u.Metadata = maps.Clone(live.Metadata)
		for _, k := range legacyMetadata {
			delete(u.Metadata, k)
		}
	}
	u.Description = want.Description
	u.Subjects = want.Subjects
	u.Retention = want.Retention
	u.Storage = want.Storage
	u.Discard = want.Discard
	u.MaxConsumers = want.MaxConsumers
	u.Duplicates = want.Duplicates
	u.Replicas = want.Replicas
	u.AllowAtomicPublish = want.AllowAtomicPublish
	return u
}

// LimitDrift is one mail stream limit whose live value differs from the
// config's, both as the config spells them.
type LimitDrift struct {
	Key    string `json:"key"` // under queue.: one of limitKeys
	Live   string `json:"live"`
	Config string `json:"config"`
}

func (d LimitDrift) String() string { return d.Key + ": live " + d.Live + ", config " + d.Config }

// limitKeys are the mail stream limits an operator changes live, by config
// key under queue.
var limitKeys = []string{"max_msgs", "max_bytes", "max_age", "max_msg_size", "per_domain_max_msgs"}

// Drift lists the mail stream limits whose live value (in live) differs
// from this config's. Nil when they agree, and while a limit change holds
// intake frozen (max_msgs is not the real one then).
func (c Config) Drift(live jetstream.StreamConfig) []LimitDrift {
	if _, frozen := live.Metadata[MetadataIntakeFreeze]; frozen {
		return nil
	}
	l, w := limitValues(live), limitValues(c.streamConfig())
	var out []LimitDrift
	for i, key := range limitKeys {
		if l[i] != w[i] {
			out = append(out, LimitDrift{Key: key, Live: l[i], Config: w[i]})
		}
	}
	return out
}

// limitValues spells sc's limits in the order of limitKeys.
func limitValues(sc jetstream.StreamConfig) []string {
	return []string{
		strconv.FormatInt(sc.MaxMsgs, 10),
		bytesize.Format(sc.MaxBytes),
		sc.MaxAge.String(),
		bytesize.Format(int64(sc.MaxMsgSize)),
		strconv.FormatInt(max(sc.MaxMsgsPerSubject, 0), 10),
	}
}

// retryUnready retries f while JetStream is not answering yet (a server just
// started, a cluster electing its meta leader or without quorum), each
// attempt bounded by a few seconds, until ctx ends (30s without a deadline).
func retryUnready(ctx context.Context, f func(ctx context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := f(actx)
		cancel()
		if err == nil || !unready(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func unready(err error) bool {
	switch apiCode(err) {
	case codeClusterNotAvail, codeClusterNotLeader, codeClusterIncomplete, codeClusterNoPeers:
		return true
	}
	return errors.Is(err, errStartRace) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}
