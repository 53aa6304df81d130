package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamConfig is the mail stream. Work-queue retention: a message leaves the
// stream when a worker acks it (after the store's commit), so the limits
// measure the backlog, not history. DiscardNew: at a limit the stream
// refuses new mail, so the sender gets a 4xx and retries, instead of
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

// consumerConfig is the workers' durable pull consumer.
//
// MaxDeliver is -1 (unlimited) on purpose. Were it cfg.MaxDeliver, the
// server would stop delivering a message after the last attempt and leave it
// in the stream, counted as pending by nobody and stored by no one: mail
// lost in plain sight. Instead the worker counts deliveries itself and, at
// cfg.MaxDeliver, dead-letters the message with a reason, then terminates
// it, so every message ends up either stored or in the dead stream.
//
// JetStream's BackOff replaces AckWait: entry i is the ack wait of delivery
// i+1. Levee's Backoff is the delay after AckWait ran out, so each entry
// given to the server is AckWait + Backoff[i]; the worker keeps its full
// AckWait to process a message.
func (c Config) consumerConfig() jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   "Levee workers",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		FilterSubject: c.SubjectPrefix + ".>",
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

// Stream metadata of startConfig: the limits of the config that last set
// the stream's, and those of them a start had to withhold (a comma list of
// the limit* names below).
const (
	metaConfiguredLimits = "levee.configured_limits"
	metaWithheldLimits   = "levee.withheld_limits"

	limitMaxAge     = "max_age"
	limitPerDomain  = "per_domain_max_msgs"
	limitMaxMsgSize = "max_msg_size"
)

// forgetWithheld returns md without the named limits in its withheld list:
// a live change sets them, and a later start must not replace the
// operator's value with the config's. md itself is not changed.
func forgetWithheld(md map[string]string, names ...string) map[string]string {
	list, ok := md[metaWithheldLimits]
	if !ok {
		return md
	}
	kept := slices.DeleteFunc(strings.Split(list, ","), func(s string) bool { return s == "" || slices.Contains(names, s) })
	out := maps.Clone(md)
	if len(kept) == 0 {
		delete(out, metaWithheldLimits)
	} else {
		out[metaWithheldLimits] = strings.Join(kept, ",")
	}
	return out
}

// configuredLimits fingerprints the limits the config asks for.
func (c Config) configuredLimits() string {
	return fmt.Sprintf("max_msgs=%d max_bytes=%d max_age=%s max_msg_size=%d per_domain_max_msgs=%d",
		c.MaxMsgs, c.MaxBytes, c.MaxAge, c.MaxMsgSize, c.PerDomainMaxMsgs)
}

// startConfig is the stream config a starting process applies. Every role
// process runs it, so it must never undo an operator's live limit change
// (a restarting pod, a worker KEDA adds) nor delete queued mail:
//   - while the config's limits are those that last set the stream's
//     (the metadata fingerprint), the stream's current limits stay, as
//     `levee queue limits set` left them;
//   - a changed config applies its limits, except one that would make
//     JetStream delete queued mail (see Admin.deletions), or a max_msg_size
//     that would bounce mail running receivers accept (see
//     Admin.sizeConsequences): that limit keeps the server's value, with a
//     warning naming it, and is recorded as withheld, for a later start to
//     apply once it is safe.
//
// old is the stream as it is (nil when it does not exist yet); s is its
// handle, for the per-domain counts.
func (q *Queue) startConfig(ctx context.Context, s jetstream.Stream, old *jetstream.StreamInfo) (jetstream.StreamConfig, error) {
	want := q.cfg.streamConfig()
	want.Metadata = map[string]string{metaConfiguredLimits: q.cfg.configuredLimits()}
	if old == nil {
		return want, nil
	}
	for k, v := range old.Config.Metadata { // the server's own keys stay
		if k != metaConfiguredLimits && k != metaWithheldLimits {
			want.Metadata[k] = v
		}
	}
	// A changed config applies all its limits. An unchanged one keeps what
	// is live, but tries again what an earlier start had to withhold.
	changed := old.Config.Metadata[metaConfiguredLimits] != want.Metadata[metaConfiguredLimits]
	withheldBefore := strings.Split(old.Config.Metadata[metaWithheldLimits], ",")
	keepAge := func() { want.MaxAge = old.Config.MaxAge }
	if !changed {
		if old.Config.MaxMsgs != want.MaxMsgs || old.Config.MaxBytes != want.MaxBytes || old.Config.MaxMsgSize != want.MaxMsgSize ||
			old.Config.MaxAge != want.MaxAge || old.Config.MaxMsgsPerSubject != want.MaxMsgsPerSubject {
			q.log.Info("queue: keeping the stream limits changed live; the config's are unchanged since they were applied",
				"limits", limitsOf(old.Config))
		}
		want.MaxMsgs, want.MaxBytes = old.Config.MaxMsgs, old.Config.MaxBytes
		if !slices.Contains(withheldBefore, limitMaxMsgSize) {
			want.MaxMsgSize = old.Config.MaxMsgSize
		}
		if !slices.Contains(withheldBefore, limitMaxAge) {
			keepAge()
		}
		if !slices.Contains(withheldBefore, limitPerDomain) {
			keepPerDomain(&want, old)
		}
	}
	d, err := q.admin.deletions(ctx, s, old, want)
	if err != nil {
		return want, err
	}
	if d.maxAge != "" {
		q.log.Warn("queue: queue.max_age from the config not applied: it would delete queued mail; the stream keeps its own until a start finds it safe",
			"why", d.maxAge, "kept", old.Config.MaxAge)
		keepAge()
		withhold(want.Metadata, limitMaxAge)
	}
	if d.perDomain != "" {
		q.log.Warn("queue: queue.per_domain_max_msgs from the config not applied: it would delete queued mail; the stream keeps its own until a start finds it safe",
			"why", d.perDomain, "kept", old.Config.MaxMsgsPerSubject)
		withholdPerDomain(&want, old)
	}
	return want, nil
}

// sizeBounces says whether want lowers max_msg_size below what running
// receivers accept (see Admin.sizeConsequences): this process's own SIZE
// fits (the config is checked), but receivers with another config may not.
func (q *Queue) sizeBounces(ctx context.Context, old *jetstream.StreamInfo, want jetstream.StreamConfig) bool {
	if want.MaxMsgSize >= old.Config.MaxMsgSize {
		return false
	}
	// Withheld also when it cannot tell: keeping the larger limit a while
	// is always safe, and the next start asks again.
	if _, err := q.admin.sizeConsequences(ctx, want.MaxMsgSize, false); err != nil {
		q.log.Warn("queue: queue.max_msg_size from the config not applied: running receivers may accept larger mail, which would bounce; the stream keeps its own until a start finds it safe",
			"why", err, "kept", old.Config.MaxMsgSize)
		return true
	}
	return false
}

// withholdSize keeps old's max_msg_size in want, recorded as withheld.
func withholdSize(want *jetstream.StreamConfig, old *jetstream.StreamInfo) {
	want.MaxMsgSize = old.Config.MaxMsgSize
	withhold(want.Metadata, limitMaxMsgSize)
}

// keepPerDomain keeps old's per-domain cap in want.
func keepPerDomain(want *jetstream.StreamConfig, old *jetstream.StreamInfo) {
	want.MaxMsgsPerSubject, want.DiscardNewPerSubject = old.Config.MaxMsgsPerSubject, old.Config.DiscardNewPerSubject
}

// withholdPerDomain keeps old's per-domain cap in want, recorded as withheld.
func withholdPerDomain(want *jetstream.StreamConfig, old *jetstream.StreamInfo) {
	keepPerDomain(want, old)
	withhold(want.Metadata, limitPerDomain)
}

// withhold adds name to md's withheld list, in place: md is a want's metadata,
// which startConfig builds afresh.
func withhold(md map[string]string, name string) {
	withheld := slices.DeleteFunc(strings.Split(md[metaWithheldLimits], ","), func(s string) bool { return s == "" || s == name })
	md[metaWithheldLimits] = strings.Join(append(withheld, name), ",")
}

// ensure creates or updates the streams and the consumer: Open is
// idempotent, and a changed config (limits) takes effect on the next Open,
// as far as startConfig lets it.
func (q *Queue) ensure(ctx context.Context) error {
	var info *jetstream.StreamInfo
	err := retryUnready(ctx, func(ctx context.Context) (err error) {
		info, err = q.applyStartConfig(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("queue: stream %s: %w", q.cfg.Stream, err)
	}
	if q.batching && (info == nil || !info.Config.AllowAtomicPublish) {
		q.batching = false
		q.log.Warn("queue: the server does not support atomic batch publish (nats-server >= 2.12); publishing one message at a time")
	}
	if err := retryUnready(ctx, func(ctx context.Context) error {
		_, err := q.js.CreateOrUpdateStream(ctx, q.cfg.deadStreamConfig())
		return err
	}); err != nil {
		return fmt.Errorf("queue: dead stream %s: %w", q.cfg.DeadStream, err)
	}
	if err := retryUnready(ctx, func(ctx context.Context) error {
		_, err := q.js.CreateOrUpdateConsumer(ctx, q.cfg.Stream, q.cfg.consumerConfig())
		return err
	}); err != nil {
		return fmt.Errorf("queue: consumer %s: %w", q.cfg.Durable, err)
	}
	return nil
}

// applyStartConfig creates the mail stream, or updates it to startConfig's
// plan. A plan that lowers the per-domain cap is made and applied with
// intake frozen, as a live change is (see Admin.freezeIntake): otherwise
// mail arriving between the check and the update could be trimmed away.
// Another process's change in progress makes it wait (ErrBusy, retried).
func (q *Queue) applyStartConfig(ctx context.Context) (*jetstream.StreamInfo, error) {
	s, old, err := q.admin.unfrozenStream(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		want, _ := q.startConfig(ctx, nil, nil)
		s, err := q.js.CreateOrUpdateStream(ctx, want)
		if err != nil {
			return nil, err
		}
		return s.CachedInfo(), nil
	}
	if err != nil {
		return nil, err
	}
	want, err := q.startConfig(ctx, s, old)
	if err != nil {
		return nil, err
	}
	// Asked once, before any freeze: it listens for the receivers a while.
	bounces := q.sizeBounces(ctx, old, want)
	if bounces {
		withholdSize(&want, old)
	}
	token := ""
	if lowersPerDomain(old.Config, want) {
		var checked *jetstream.StreamInfo
		checked, token, err = q.admin.freezeIntake(ctx, old)
		if errors.Is(err, ErrInvalidLimit) {
			// The server cannot hold the freeze's mark: without it the cap
			// cannot be lowered safely, but the process can start.
			q.log.Warn("queue: queue.per_domain_max_msgs from the config not applied", "why", err, "kept", old.Config.MaxMsgsPerSubject)
			withholdPerDomain(&want, old)
			return q.applyStream(ctx, want)
		}
		if err != nil {
			return nil, err
		}
		want, err = q.startConfig(ctx, s, checked)
		if err == nil && bounces {
			withholdSize(&want, old)
		}
		if err == nil {
			err = q.admin.confirmFreeze(ctx, token)
		}
		if err != nil {
			q.admin.unfreezeIntake(token, old.Config)
			return nil, err
		}
	}
	// The update also lifts a freeze: want has no mark and its own max_msgs.
	info, err := q.applyStream(ctx, want)
	if err != nil && token != "" {
		// Undone only if still ours: the update may have applied.
		q.admin.unfreezeIntake(token, old.Config)
	}
	return info, err
}

func (q *Queue) applyStream(ctx context.Context, sc jetstream.StreamConfig) (*jetstream.StreamInfo, error) {
	s, err := q.js.UpdateStream(ctx, sc)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
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
	return errors.Is(err, ErrBusy) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}
