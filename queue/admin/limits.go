package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/fleet"
	"github.com/nats-io/nats.go/jetstream"
)

// LimitsReport is the mail stream's limits as the server has them and, when
// the Admin knows Levee's config (Config.Configured), where they differ
// from it: a start applies the config's limits only when it creates the
// stream, so a live change outlasts restarts and shows here as drift.
type LimitsReport struct {
	StreamLimits
	// ComparedWithConfig says Drift was computed (an Admin reached straight
	// through JetStream knows no config).
	ComparedWithConfig bool               `json:"compared_with_config"`
	Drift              []queue.LimitDrift `json:"drift,omitempty"`
}

// Limits returns the mail queue's limits as the server has them now: the
// totals over the layout's partitions (queue.SumLimits).
func (a *Admin) Limits(ctx context.Context) (LimitsReport, error) {
	streams, _, err := a.readLayoutAsIs(ctx)
	if err != nil {
		return LimitsReport{}, err
	}
	live := queue.SumLimits(configsOf(streams))
	r := LimitsReport{StreamLimits: limitsOf(live), ComparedWithConfig: a.configured}
	if a.configured {
		r.Drift = a.cfg.Drift(live)
	}
	return r, nil
}

// readLayoutAsIs reads the layout's mail streams, each without a freeze
// (the real max_msgs), whatever its age.
func (a *Admin) readLayoutAsIs(ctx context.Context) ([]mailStream, []jetstream.Stream, error) {
	layout, handles, err := a.layoutStreams(ctx)
	if err != nil {
		return nil, nil, err
	}
	streams := make([]mailStream, len(layout))
	for i, p := range layout {
		streams[i] = mailStream{p: p, info: a.withoutFreeze(handles[i].CachedInfo())}
	}
	return streams, handles, nil
}

// layoutStreams looks up the layout's mail streams, in the layout's order.
func (a *Admin) layoutStreams(ctx context.Context) ([]queue.Partition, []jetstream.Stream, error) {
	layout, err := a.layout(ctx)
	if err != nil {
		return nil, nil, err
	}
	handles := make([]jetstream.Stream, len(layout))
	for i, p := range layout {
		s, err := a.js.Stream(ctx, p.Stream)
		if err != nil {
			return nil, nil, fmt.Errorf("admin: stream %s: %w", p.Stream, err)
		}
		handles[i] = s
	}
	return layout, handles, nil
}

func configsOf(streams []mailStream) []jetstream.StreamConfig {
	out := make([]jetstream.StreamConfig, len(streams))
	for i, m := range streams {
		out[i] = m.info.Config
	}
	return out
}

// LimitsChange is a change of the stream limits an operator makes while
// Levee runs. A zero field leaves that limit as it is; PerDomainMaxMsgs -1
// removes the per-domain cap.
type LimitsChange struct {
	MaxMsgs          int64         `json:"max_msgs,omitempty"`
	MaxBytes         int64         `json:"max_bytes,omitempty"`
	MaxAge           time.Duration `json:"max_age,omitempty"`
	MaxMsgSize       int32         `json:"max_msg_size,omitempty"`
	PerDomainMaxMsgs int64         `json:"per_domain_max_msgs,omitempty"`
	// Force applies a change even though JetStream will delete queued mail
	// because of it (ErrWouldDelete otherwise), or mail the receivers
	// accept will bounce (ErrWouldBounce otherwise).
	Force bool `json:"force,omitempty"`
}

// LimitsUpdate is the outcome of UpdateLimits: the limits now in force and
// what the change means for the mail already queued, in words.
type LimitsUpdate struct {
	Limits StreamLimits `json:"limits"`
	Notes  []string     `json:"notes,omitempty"`
}

// ageMargin is the room kept between the oldest queued message and a lowered
// max_age: the check and the update are two steps, and mail ages between them.
const ageMargin = time.Minute

// UpdateLimits changes the mail queue's limits live: no restart, nothing
// queued lost. The limits are totals: each partition gets its share
// (queue.Share) of max_msgs, max_bytes and the per-domain cap, and max_age
// and max_msg_size whole. It refuses (ErrWouldDelete) a change that would
// make JetStream delete queued mail, unless l.Force:
//   - max_age below the oldest queued message's age (JetStream expires
//     it);
//   - a per-domain cap below what a domain has queued in a partition
//     (JetStream trims every subject to the new cap, oldest first,
//     whatever the discard policy).
//
// It refuses (ErrWouldBounce) a max_msg_size below what a running receiver
// accepts, unless l.Force (see sizeConsequences).
//
// Lowering max_msgs or max_bytes below usage deletes nothing (the stream
// discards new mail, not old): new mail is refused (452 4.3.1) until the
// workers drained below the new limit, which the returned notes say.
//
// A lowered per-domain cap is checked and applied with intake frozen (see
// freezeIntake). While another process's change holds intake frozen, it
// waits a moment, then answers ErrBusy.
//
// The change is made on the server and outlasts restarts: this is the one
// writer of an existing stream's limits (a start creates the streams with
// the config's limits and never changes them afterwards).
func (a *Admin) UpdateLimits(ctx context.Context, l LimitsChange) (LimitsUpdate, error) {
	a.limitsMu.Lock()
	defer a.limitsMu.Unlock()
	olds, err := a.unfrozenLayout(ctx)
	if err != nil {
		return LimitsUpdate{}, fmt.Errorf("admin: update limits: %w", err)
	}
	oldTotal := queue.SumLimits(configsOf(olds))
	want := l.applyTo(oldTotal)
	if err := a.validLimits(want, len(olds)); err != nil {
		return LimitsUpdate{}, err
	}
	var sizeNotes []string
	if want.MaxMsgSize < oldTotal.MaxMsgSize {
		if sizeNotes, err = a.sizeConsequences(ctx, want.MaxMsgSize, l.Force); err != nil {
			return LimitsUpdate{}, err
		}
	}
	news := l.shares(olds)
	checked := make([]*jetstream.StreamInfo, len(olds))
	for i, old := range olds {
		checked[i] = old.info
	}
	token := ""
	if lowersPerDomain(oldTotal, want) && !l.Force {
		if checked, token, err = a.freezeIntake(ctx, olds); err != nil {
			return LimitsUpdate{}, a.updateError(err)
		}
	}
	notes, err := a.consequences(ctx, olds, checked, news, want, l.Force)
	if err == nil && token != "" {
		err = a.confirmFreeze(ctx, olds, token)
	}
	if err != nil {
		if token != "" {
			a.unfreezeIntake(token, olds)
		}
		return LimitsUpdate{}, err
	}
	applied, err := a.apply(ctx, olds, news, token)
	if err != nil {
		return LimitsUpdate{}, err
	}
	if a.changed != nil {
		a.changed()
	}
	nc := queue.SumLimits(applied)
	a.log.Info("admin: limits updated", "max_msgs", nc.MaxMsgs, "max_bytes", nc.MaxBytes, "max_age", nc.MaxAge,
		"max_msg_size", nc.MaxMsgSize, "per_domain_max_msgs", nc.MaxMsgsPerSubject, "partitions", len(olds), "forced", l.Force)
	return LimitsUpdate{Limits: limitsOf(nc), Notes: append(sizeNotes, notes...)}, nil
}

// apply writes each partition's new config; each write also lifts that
// partition's part of a freeze. If one fails, the rest stay as they were
// (their freeze lifted) and the error says how far it got: the same change
// made again completes it.
func (a *Admin) apply(ctx context.Context, olds []mailStream, news []jetstream.StreamConfig, token string) ([]jetstream.StreamConfig, error) {
	applied := make([]jetstream.StreamConfig, 0, len(news))
	for i, sc := range news {
		s, err := a.js.UpdateStream(ctx, sc)
		if err != nil {
			if token != "" {
				// Undone only where still ours: the update may have applied.
				a.unfreezeIntake(token, olds[i:])
			}
			err = a.updateError(err)
			if i > 0 {
				err = fmt.Errorf("%w (applied to %d of %d partitions; make the same change again)", err, i, len(news))
			}
			return nil, err
		}
		applied = append(applied, s.CachedInfo().Config)
	}
	return applied, nil
}

// applyTo is a total config with the change made.
func (l LimitsChange) applyTo(sc jetstream.StreamConfig) jetstream.StreamConfig {
	if l.MaxMsgs != 0 {
		sc.MaxMsgs = l.MaxMsgs
	}
	if l.MaxBytes != 0 {
		sc.MaxBytes = l.MaxBytes
	}
	if l.MaxAge != 0 {
		sc.MaxAge = l.MaxAge
	}
	if l.MaxMsgSize != 0 {
		sc.MaxMsgSize = l.MaxMsgSize
	}
	if l.PerDomainMaxMsgs != 0 {
		sc.MaxMsgsPerSubject, sc.DiscardNewPerSubject = -1, false
		if l.PerDomainMaxMsgs > 0 {
			sc.MaxMsgsPerSubject, sc.DiscardNewPerSubject = l.PerDomainMaxMsgs, true
		}
	}
	return sc
}

// shares are the partitions' configs with the change made: each its share
// of the totals the change sets, the rest as they are.
func (l LimitsChange) shares(olds []mailStream) []jetstream.StreamConfig {
	n := len(olds)
	out := make([]jetstream.StreamConfig, n)
	for i, old := range olds {
		sc := old.info.Config
		split := LimitsChange{
			MaxMsgs: queue.Share(l.MaxMsgs, i, n), MaxBytes: queue.Share(l.MaxBytes, i, n),
			MaxAge: l.MaxAge, MaxMsgSize: l.MaxMsgSize, PerDomainMaxMsgs: queue.Share(l.PerDomainMaxMsgs, i, n),
		}
		out[i] = split.applyTo(sc)
	}
	return out
}

// sizeConsequences checks a lowered max_msg_size against the SIZE each
// running receiver advertises (ProcessStats). A receiver reads a message up
// to its own SIZE and only then publishes it; one the queue then refuses
// as too large gets 552 5.3.4, which the sender bounces to its user. So a
// max_msg_size below any receiver's SIZE plus queue.SizeMargin is refused
// (ErrWouldBounce) unless force.
func (a *Admin) sizeConsequences(ctx context.Context, maxMsgSize int32, force bool) ([]string, error) {
	// A safety check: it listens longer than a status does, for receivers
	// far away or busy.
	procs, err := fleet.Gather(ctx, a.nc, a.cfg.Stream, sizeCheckWait)
	if err = errors.Join(err, ctx.Err()); err != nil {
		// Cut short, or an answer unreadable: a receiver may have been
		// missed, so no verdict.
		err = fmt.Errorf("admin: could not tell every receiver's SIZE: %w", err)
		if !force {
			return nil, err
		}
		return []string{"FORCED without knowing every receiver's SIZE: " + err.Error()}, nil
	}
	var over, unknown []string
	receivers := 0
	for _, p := range procs {
		switch {
		case p.SMTP == nil:
			continue
		case p.SMTP.MaxMessageBytes <= 0:
			unknown = append(unknown, p.Instance)
		case p.SMTP.MaxMessageBytes+queue.SizeMargin > int64(maxMsgSize):
			over = append(over, fmt.Sprintf("%s (SIZE %d)", p.Instance, p.SMTP.MaxMessageBytes))
		}
		receivers++
	}
	rule := fmt.Sprintf("keep smtp.max_message_bytes at most max_msg_size minus 64KiB (%d) on every receiver, or the mail between the two bounces (552 5.3.4)",
		int64(maxMsgSize)-queue.SizeMargin)
	var notes []string
	switch {
	case receivers == 0:
		notes = append(notes, "no receiver answered: "+rule)
	case len(unknown) > 0:
		notes = append(notes, fmt.Sprintf("receivers %s did not report their SIZE (older Levee): %s", strings.Join(unknown, ", "), rule))
	}
	if len(over) == 0 {
		return notes, nil
	}
	what := fmt.Sprintf("max_msg_size %d is below what receivers accept plus 64KiB of headers: %s; mail between the two would be refused with 552 5.3.4 and bounce",
		maxMsgSize, strings.Join(over, ", "))
	if !force {
		return nil, fmt.Errorf("%w: %s; nothing was changed: lower smtp.max_message_bytes on those receivers first, or force the change", ErrWouldBounce, what)
	}
	a.log.Warn("admin: max_msg_size change forced although receivers accept larger mail", "what", what)
	return append(notes, "FORCED, larger mail bounces: "+what), nil
}

// sizeCheckWait is how long the check that no receiver accepts larger mail
// than a lowered max_msg_size listens for the receivers' stats: one missed
// means bounced mail, so it listens longer than a status does.
const sizeCheckWait = time.Second

// lowersPerDomain: sc's per-domain cap is new or lower than old's.
func lowersPerDomain(old, sc jetstream.StreamConfig) bool {
	return sc.MaxMsgsPerSubject > 0 && (old.MaxMsgsPerSubject <= 0 || sc.MaxMsgsPerSubject < old.MaxMsgsPerSubject)
}

// updateError reports a refused stream update. JetStream refusing the
// limits themselves (not enough storage to reserve max_bytes on its
// servers, say) is the operator's to fix: ErrInvalidLimit with the
// server's reason.
func (a *Admin) updateError(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case errors.Is(queue.Classify(err), queue.ErrQueueFull): // a storage limit of the servers
			return fmt.Errorf("%w: JetStream refused it: %s (raise the servers' store limit first)", ErrInvalidLimit, apiErr.Description)
		case apiErr.Code == 400:
			return fmt.Errorf("%w: JetStream refused it: %s", ErrInvalidLimit, apiErr.Description)
		}
	}
	return fmt.Errorf("admin: update limits: %w", err)
}

// validLimits checks a change's totals, over n partitions.
func (a *Admin) validLimits(sc jetstream.StreamConfig, n int) error {
	switch {
	case sc.MaxMsgs < 1:
		return fmt.Errorf("%w: queue.max_msgs must be > 0, got %d", ErrInvalidLimit, sc.MaxMsgs)
	case sc.MaxMsgs < int64(n):
		return fmt.Errorf("%w: queue.max_msgs must be at least the %d partitions (each holds its share), got %d", ErrInvalidLimit, n, sc.MaxMsgs)
	case sc.MaxMsgsPerSubject > 0 && sc.MaxMsgsPerSubject < int64(n):
		return fmt.Errorf("%w: queue.per_domain_max_msgs must be 0 (no cap) or at least the %d partitions (each holds its share), got %d", ErrInvalidLimit, n, sc.MaxMsgsPerSubject)
	case sc.MaxBytes < 1:
		return fmt.Errorf("%w: queue.max_bytes must be > 0, got %d", ErrInvalidLimit, sc.MaxBytes)
	case sc.MaxAge <= 0 || sc.MaxAge < sc.Duplicates:
		return fmt.Errorf("%w: queue.max_age must be >= queue.duplicate_window (%s), got %s", ErrInvalidLimit, sc.Duplicates, sc.MaxAge)
	case sc.MaxMsgSize < 1024 || int64(sc.MaxMsgSize) > a.nc.MaxPayload():
		return fmt.Errorf("%w: queue.max_msg_size must be between 1KiB and the server's max_payload (%d), got %d", ErrInvalidLimit, a.nc.MaxPayload(), sc.MaxMsgSize)
	case int64(sc.MaxMsgSize) > queue.Share(sc.MaxBytes, n-1, n):
		// The smallest partition's share is what one message must fit in.
		return fmt.Errorf("%w: queue.max_msg_size (%d) must not exceed each partition's share of queue.max_bytes (%d / %d partitions = %d)",
			ErrInvalidLimit, sc.MaxMsgSize, sc.MaxBytes, n, queue.Share(sc.MaxBytes, n-1, n))
	case sc.MaxMsgsPerSubject > sc.MaxMsgs:
		return fmt.Errorf("%w: queue.per_domain_max_msgs (%d) must not exceed queue.max_msgs (%d)", ErrInvalidLimit, sc.MaxMsgsPerSubject, sc.MaxMsgs)
	}
	return nil
}

// consequences says what the change to news (totals: want) does to the
// mail already queued, and refuses (unless force) what would delete some
// of it. checked are the streams' states to judge by (frozen, when the
// change freezes intake).
func (a *Admin) consequences(ctx context.Context, olds []mailStream, checked []*jetstream.StreamInfo, news []jetstream.StreamConfig,
	want jetstream.StreamConfig, force bool) ([]string, error) {
	var notes, deletes []string
	var msgs, bytes uint64
	oldTotal := queue.SumLimits(configsOf(olds))
	for i, old := range olds {
		msgs += checked[i].State.Msgs
		bytes += checked[i].State.Bytes
		d, err := a.deletions(ctx, old.p, &jetstream.StreamInfo{Config: old.info.Config, State: checked[i].State}, news[i])
		if err != nil {
			return nil, err
		}
		deletes = append(deletes, d.all()...)
	}
	if want.MaxMsgs < oldTotal.MaxMsgs && msgs > uint64(want.MaxMsgs) {
		notes = append(notes, fmt.Sprintf("max_msgs %d is below the %d messages queued: nothing queued is deleted; new mail is deferred (452 4.3.1) until the workers drain below it",
			want.MaxMsgs, msgs))
	}
	if want.MaxBytes < oldTotal.MaxBytes && bytes > uint64(want.MaxBytes) {
		notes = append(notes, fmt.Sprintf("max_bytes %d is below the %d bytes queued: nothing queued is deleted; new mail is deferred (452 4.3.1) until the workers drain below it",
			want.MaxBytes, bytes))
	}
	if len(deletes) == 0 {
		return notes, nil
	}
	if !force {
		return nil, fmt.Errorf("%w: %s; nothing was changed: wait for the workers to drain that mail, or force the change and lose it",
			ErrWouldDelete, strings.Join(deletes, "; "))
	}
	for _, d := range deletes {
		notes = append(notes, "FORCED, accepted mail deleted: "+d)
	}
	a.log.Warn("admin: limit change forced although it deletes queued mail", "what", strings.Join(deletes, "; "))
	return notes, nil
}

// deletion says, per limit, why changing old to sc would make JetStream
// delete queued mail ("" when it would not).
type deletion struct{ maxAge, perDomain string }

func (d deletion) all() []string {
	var out []string
	for _, s := range []string{d.maxAge, d.perDomain} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// deletions finds the changes that delete queued mail whatever the discard
// policy: a max_age below the oldest message's age (it expires), and a
// per-subject cap below a domain's count (JetStream trims each subject to
// the new cap, oldest first, on update).
func (a *Admin) deletions(ctx context.Context, p queue.Partition, old *jetstream.StreamInfo, sc jetstream.StreamConfig) (deletion, error) {
	var d deletion
	st := old.State
	if st.Msgs == 0 {
		return d, nil
	}
	if sc.MaxAge > 0 && (old.Config.MaxAge == 0 || sc.MaxAge < old.Config.MaxAge) && !st.FirstTime.IsZero() {
		if age := time.Since(st.FirstTime); age+ageMargin > sc.MaxAge {
			d.maxAge = fmt.Sprintf("max_age %s: the oldest queued message is %s old, and JetStream deletes queued messages older than max_age", sc.MaxAge, age.Round(time.Second))
		}
	}
	if lowersPerDomain(old.Config, sc) {
		s, err := a.js.Stream(ctx, p.Stream)
		if err != nil {
			return d, fmt.Errorf("admin: per-domain counts: %w", err)
		}
		si, err := s.Info(ctx, jetstream.WithSubjectFilter(p.Prefix+".>"))
		if err != nil {
			return d, fmt.Errorf("admin: per-domain counts: %w", err)
		}
		var over []string
		for _, c := range a.topDomains(si.State.Subjects, len(si.State.Subjects)) {
			if c.Messages > uint64(sc.MaxMsgsPerSubject) {
				over = append(over, fmt.Sprintf("%s (%d)", c.Domain, c.Messages))
			}
		}
		if len(over) > 0 {
			d.perDomain = fmt.Sprintf("per_domain_max_msgs %d in %s: JetStream would delete the oldest queued messages of %s down to the new cap",
				sc.MaxMsgsPerSubject, p.Stream, strings.Join(over, ", "))
		}
	}
	return d, nil
}
