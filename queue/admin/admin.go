package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of the operator's tools (Admin). The web API maps them onto HTTP
// statuses: ErrInvalidLimit 400, ErrWouldDelete, ErrWouldBounce and
// ErrBusy 409, ErrNotFound 404.
var (
	// ErrInvalidLimit: a limit change was refused as invalid.
	ErrInvalidLimit = errors.New("queue: invalid limit")
	// ErrWouldDelete: the change would make JetStream delete queued,
	// already accepted mail; it was not applied (Force overrides).
	ErrWouldDelete = errors.New("queue: change would delete queued mail")
	// ErrWouldBounce: the change would make the queue refuse mail that
	// running receivers still accept by their SIZE, so that mail would
	// bounce (552, permanent); it was not applied (Force overrides).
	ErrWouldBounce = errors.New("queue: change would bounce mail the receivers accept")
	// ErrNotFound: no dead letter with that sequence.
	ErrNotFound = errors.New("queue: not found")
)

// Admin is the operator's view of the queue: status, live limits and dead
// letters. It needs only a connection, so that `levee queue` and `levee dlq`
// work straight against JetStream (--nats-url) as well as inside a running
// Levee (Queue.Admin). It never creates or reconfigures anything but what an
// operator asked for.
type Admin struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	embedded bool
	log      *slog.Logger
	// limitsChanged runs after a limit change (the Queue refreshes its
	// fill gauge at once); may be nil.
	limitsChanged func()

	// limitsMu serialises UpdateLimits: each writes back a whole stream
	// config read just before, so two at once would undo one another.
	limitsMu sync.Mutex
}

// NewAdmin uses nc (which the caller owns and closes) for the queue named in
// cfg (its stream, consumer and dead stream names; limits are read from the
// server). log may be nil.
func NewAdmin(nc *nats.Conn, cfg Config, log *slog.Logger) (*Admin, error) {
	cfg = cfg.WithDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Admin{cfg: cfg, nc: nc, js: js, log: log}, nil
}

// Admin returns the operator's tools on this queue's connection.
func (q *Queue) Admin() *Admin { return q.admin }

// topDomainsShown is how many domains Status lists, largest first.
const topDomainsShown = 10

// DomainCount is the queued messages of one recipient domain.
type DomainCount struct {
	Domain   string `json:"domain"`
	Messages uint64 `json:"messages"`
}

// Status reads fresh figures from the server: the mail stream with its
// per-domain counts, the consumer, the dead stream, and the Levee processes
// that answer on the stats subject (waiting processWait for them). Rates
// stay zero: they need two samples (see RatesBetween and Sampler).
func (a *Admin) Status(ctx context.Context) (Status, error) {
	st, s, err := a.basicStatus(ctx)
	if err != nil {
		return Status{}, err
	}
	// Info with a subject filter returns the per-subject counts (one
	// subject per recipient domain); the plain info does not.
	si, err := s.Info(ctx, jetstream.WithSubjectFilter(a.cfg.SubjectPrefix+".>"))
	if err != nil {
		return Status{}, fmt.Errorf("queue: stream info %s: %w", a.cfg.Stream, err)
	}
	st.TopDomains = topDomains(si.State.Subjects, a.cfg.SubjectPrefix, topDomainsShown)
	procs, err := a.Processes(ctx, processWait)
	if err != nil {
		a.log.Debug("queue: process stats", "err", err)
	}
	st.addProcesses(procs)
	return st, nil
}

// basicStatus is the status without per-domain counts and process stats:
// three info requests, cheap enough for the autoscaler to poll.
func (a *Admin) basicStatus(ctx context.Context) (Status, jetstream.Stream, error) {
	s, err := a.js.Stream(ctx, a.cfg.Stream)
	if err != nil {
		return Status{}, nil, fmt.Errorf("queue: stream info %s: %w", a.cfg.Stream, err)
	}
	ci, err := a.consumerInfo(ctx)
	if err != nil {
		return Status{}, nil, err
	}
	di, err := a.streamInfo(ctx, a.cfg.DeadStream)
	if err != nil {
		return Status{}, nil, err
	}
	return a.statusFrom(a.withoutFreeze(s.CachedInfo()), ci, di, time.Now()), s, nil
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

func (a *Admin) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := a.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("queue: stream info %s: %w", name, err)
	}
	// Stream() already fetched the info; CachedInfo is that fresh copy.
	return s.CachedInfo(), nil
}

func (a *Admin) consumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, err := a.js.Consumer(ctx, a.cfg.Stream, a.cfg.Durable)
	if err != nil {
		return nil, fmt.Errorf("queue: consumer info %s: %w", a.cfg.Durable, err)
	}
	return c.CachedInfo(), nil
}

// Limits returns the mail stream's limits as the server has them now.
func (a *Admin) Limits(ctx context.Context) (StreamLimits, error) {
	si, err := a.streamInfo(ctx, a.cfg.Stream)
	if err != nil {
		return StreamLimits{}, err
	}
	return limitsOf(a.withoutFreeze(si).Config), nil
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

// Limits are the stream limits an operator may change while Levee runs.
// A zero field leaves that limit as it is; PerDomainMaxMsgs -1 removes the
// per-domain cap.
type Limits struct {
	MaxMsgs          int64         `json:"max_msgs,omitempty"`
	MaxBytes         int64         `json:"max_bytes,omitempty"`
	MaxAge           time.Duration `json:"max_age,omitempty"`
	MaxMsgSize       int32         `json:"max_msg_size,omitempty"`
	PerDomainMaxMsgs int64         `json:"per_domain_max_msgs,omitempty"`
	// Force applies a change even though JetStream will delete queued mail
	// because of it (ErrWouldDelete otherwise). Accepted mail is lost.
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

// UpdateLimits changes the mail stream's limits live: no restart, nothing
// queued lost. It refuses (ErrWouldDelete) a change that would make
// JetStream delete queued mail, unless l.Force:
//   - max_age below the oldest queued message's age (JetStream expires
//     it);
//   - per_domain_max_msgs below what a domain has queued (JetStream
//     trims every subject to the new cap, oldest first, whatever the
//     discard policy).
//
// Lowering max_msgs or max_bytes below usage deletes nothing (the stream
// discards new mail, not old): new mail is refused (452 4.3.1) until the
// workers drained below the new limit, which the returned notes say.
//
// A lowered per-domain cap is checked and applied with intake frozen (see
// freezeIntake). While another process's change holds intake frozen, it
// waits a moment, then answers ErrBusy.
//
// The change is made on the server and outlasts restarts (see
// Queue.startConfig) until the config's limits change.
func (a *Admin) UpdateLimits(ctx context.Context, l Limits) (LimitsUpdate, error) {
	a.limitsMu.Lock()
	defer a.limitsMu.Unlock()
	s, old, err := a.unfrozenStream(ctx)
	if err != nil {
		return LimitsUpdate{}, fmt.Errorf("queue: update limits: %w", err)
	}
	sc := old.Config
	if l.MaxMsgs != 0 {
		sc.MaxMsgs = l.MaxMsgs
	}
	if l.MaxBytes != 0 {
		sc.MaxBytes = l.MaxBytes
	}
	var set []string // the limits a start may withhold that this change sets
	if l.MaxAge != 0 {
		sc.MaxAge = l.MaxAge
		set = append(set, limitMaxAge)
	}
	if l.MaxMsgSize != 0 {
		sc.MaxMsgSize = l.MaxMsgSize
		set = append(set, limitMaxMsgSize)
	}
	if l.PerDomainMaxMsgs != 0 {
		sc.MaxMsgsPerSubject, sc.DiscardNewPerSubject = -1, false
		if l.PerDomainMaxMsgs > 0 {
			sc.MaxMsgsPerSubject, sc.DiscardNewPerSubject = l.PerDomainMaxMsgs, true
		}
		set = append(set, limitPerDomain)
	}
	sc.Metadata = forgetWithheld(sc.Metadata, set...)
	if err := a.validLimits(sc); err != nil {
		return LimitsUpdate{}, err
	}
	var sizeNotes []string
	if sc.MaxMsgSize < old.Config.MaxMsgSize {
		if sizeNotes, err = a.sizeConsequences(ctx, sc.MaxMsgSize, l.Force); err != nil {
			return LimitsUpdate{}, err
		}
	}
	checked, token := old, ""
	if lowersPerDomain(old.Config, sc) && !l.Force {
		if checked, token, err = a.freezeIntake(ctx, old); err != nil {
			return LimitsUpdate{}, a.updateError(err)
		}
	}
	unfreeze := func() {
		if token != "" {
			a.unfreezeIntake(token, old.Config)
		}
	}
	notes, err := a.consequences(ctx, s, checked, sc, l.Force)
	if err == nil && token != "" {
		err = a.confirmFreeze(ctx, token)
	}
	if err != nil {
		unfreeze()
		return LimitsUpdate{}, err
	}
	s, err = a.js.UpdateStream(ctx, sc)
	if err != nil {
		unfreeze()
		return LimitsUpdate{}, a.updateError(err)
	}
	if a.limitsChanged != nil {
		a.limitsChanged()
	}
	nc := s.CachedInfo().Config
	a.log.Info("queue: limits updated", "max_msgs", nc.MaxMsgs, "max_bytes", nc.MaxBytes, "max_age", nc.MaxAge,
		"max_msg_size", nc.MaxMsgSize, "per_domain_max_msgs", nc.MaxMsgsPerSubject, "forced", l.Force)
	return LimitsUpdate{Limits: limitsOf(nc), Notes: append(sizeNotes, notes...)}, nil
}

// sizeConsequences checks a lowered max_msg_size against the SIZE each
// running receiver advertises (ProcessStats). A receiver reads a message up
// to its own SIZE and only then publishes it; one the queue then refuses
// as too large gets 552 5.3.4, which the sender bounces to its user. So a
// max_msg_size below any receiver's SIZE plus SizeMargin is refused
// (ErrWouldBounce) unless force.
func (a *Admin) sizeConsequences(ctx context.Context, maxMsgSize int32, force bool) ([]string, error) {
	// A safety check: it listens longer than a status does, for receivers
	// far away or busy.
	procs, err := a.Processes(ctx, sizeCheckWait)
	if err = errors.Join(err, ctx.Err()); err != nil {
		// Cut short, or an answer unreadable: a receiver may have been
		// missed, so no verdict.
		err = fmt.Errorf("queue: could not tell every receiver's SIZE: %w", err)
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
		case p.SMTP.MaxMessageBytes+SizeMargin > int64(maxMsgSize):
			over = append(over, fmt.Sprintf("%s (SIZE %d)", p.Instance, p.SMTP.MaxMessageBytes))
		}
		receivers++
	}
	rule := fmt.Sprintf("keep smtp.max_message_bytes at most max_msg_size minus 64KiB (%d) on every receiver, or the mail between the two bounces (552 5.3.4)",
		int64(maxMsgSize)-SizeMargin)
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
	a.log.Warn("queue: max_msg_size change forced although receivers accept larger mail", "what", what)
	return append(notes, "FORCED, larger mail bounces: "+what), nil
}

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
		switch apiErr.ErrorCode {
		case codeStorageResources, codeInsufficientRes, codeAccountResources, codeMemoryResources:
			return fmt.Errorf("%w: JetStream refused it: %s (raise the servers' store limit first)", ErrInvalidLimit, apiErr.Description)
		}
		if apiErr.Code == 400 {
			return fmt.Errorf("%w: JetStream refused it: %s", ErrInvalidLimit, apiErr.Description)
		}
	}
	return fmt.Errorf("queue: update limits: %w", err)
}

func (a *Admin) validLimits(sc jetstream.StreamConfig) error {
	switch {
	case sc.MaxMsgs < 1:
		return fmt.Errorf("%w: queue.max_msgs must be > 0, got %d", ErrInvalidLimit, sc.MaxMsgs)
	case sc.MaxBytes < 1:
		return fmt.Errorf("%w: queue.max_bytes must be > 0, got %d", ErrInvalidLimit, sc.MaxBytes)
	case sc.MaxAge <= 0 || sc.MaxAge < sc.Duplicates:
		return fmt.Errorf("%w: queue.max_age must be >= queue.duplicate_window (%s), got %s", ErrInvalidLimit, sc.Duplicates, sc.MaxAge)
	case sc.MaxMsgSize < 1024 || int64(sc.MaxMsgSize) > a.nc.MaxPayload():
		return fmt.Errorf("%w: queue.max_msg_size must be between 1KiB and the server's max_payload (%d), got %d", ErrInvalidLimit, a.nc.MaxPayload(), sc.MaxMsgSize)
	case int64(sc.MaxMsgSize) > sc.MaxBytes:
		return fmt.Errorf("%w: queue.max_msg_size (%d) must not exceed queue.max_bytes (%d)", ErrInvalidLimit, sc.MaxMsgSize, sc.MaxBytes)
	case sc.MaxMsgsPerSubject > sc.MaxMsgs:
		return fmt.Errorf("%w: queue.per_domain_max_msgs (%d) must not exceed queue.max_msgs (%d)", ErrInvalidLimit, sc.MaxMsgsPerSubject, sc.MaxMsgs)
	}
	return nil
}

// consequences says what the change from old to sc does to the mail already
// queued, and refuses (unless force) what would delete some of it.
func (a *Admin) consequences(ctx context.Context, s jetstream.Stream, old *jetstream.StreamInfo, sc jetstream.StreamConfig, force bool) ([]string, error) {
	var notes []string
	st := old.State
	if sc.MaxMsgs < old.Config.MaxMsgs && st.Msgs > uint64(sc.MaxMsgs) {
		notes = append(notes, fmt.Sprintf("max_msgs %d is below the %d messages queued: nothing queued is deleted; new mail is deferred (452 4.3.1) until the workers drain below it",
			sc.MaxMsgs, st.Msgs))
	}
	if sc.MaxBytes < old.Config.MaxBytes && st.Bytes > uint64(sc.MaxBytes) {
		notes = append(notes, fmt.Sprintf("max_bytes %d is below the %d bytes queued: nothing queued is deleted; new mail is deferred (452 4.3.1) until the workers drain below it",
			sc.MaxBytes, st.Bytes))
	}
	d, err := a.deletions(ctx, s, old, sc)
	if err != nil {
		return nil, err
	}
	deletes := d.all()
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
	a.log.Warn("queue: limit change forced although it deletes queued mail", "what", strings.Join(deletes, "; "))
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
func (a *Admin) deletions(ctx context.Context, s jetstream.Stream, old *jetstream.StreamInfo, sc jetstream.StreamConfig) (deletion, error) {
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
		si, err := s.Info(ctx, jetstream.WithSubjectFilter(a.cfg.SubjectPrefix+".>"))
		if err != nil {
			return d, fmt.Errorf("queue: per-domain counts: %w", err)
		}
		var over []string
		for _, c := range topDomains(si.State.Subjects, a.cfg.SubjectPrefix, len(si.State.Subjects)) {
			if c.Messages > uint64(sc.MaxMsgsPerSubject) {
				over = append(over, fmt.Sprintf("%s (%d)", c.Domain, c.Messages))
			}
		}
		if len(over) > 0 {
			d.perDomain = fmt.Sprintf("per_domain_max_msgs %d: JetStream would delete the oldest queued messages of %s down to the new cap",
				sc.MaxMsgsPerSubject, strings.Join(over, ", "))
		}
	}
	return d, nil
}

// discardName spells the policy as the JetStream API does ("new", "old").
func discardName(d jetstream.DiscardPolicy) string {
	if d == jetstream.DiscardNew {
		return "new"
	}
	return "old"
}
