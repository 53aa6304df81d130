package admin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/nats-io/nats.go/jetstream"
)

// Lowering the per-domain cap freezes intake for a moment (see
// freezeIntake), and the freeze is marked in the stream's metadata
// (queue.MetadataIntakeFreeze), with the real max_msgs, the server's time
// and a token naming its maker. The mark makes the freeze a lock among the
// processes that change limits (any Levee serving the ops API, or the CLI
// straight through JetStream), which share nothing but the stream:
//   - a limit change that finds a fresh mark waits for it to go (ErrBusy
//     after freezeWait), instead of lifting the freeze under its maker or
//     making max_msgs 1 permanent;
//   - the maker checks that its mark is still there just before it applies
//     the change, and applies nothing otherwise;
//   - a mark whose maker died is stale: older than freezeStale by the
//     server's clock for a change that finds it, or seen unchanged that
//     long by a running Levee process (Run, by its own clock), which lifts
//     it. Readers of the limits see the real max_msgs meanwhile, and the
//     queue does not read its fill from a frozen max_msgs.
//
// It orders a freezing change against every other; two changes that do not
// freeze can still overwrite each other's fields, last writer wins
// (JetStream has no compare-and-set for a stream's config).
const (
	metaFreeze = queue.MetadataIntakeFreeze

	// freezeWait is how long a limit change waits for another one's
	// freeze to go before answering ErrBusy.
	freezeWait = 2 * time.Second
)

// freezeStale is how long a freeze may last before it is taken for one
// whose maker died. A freeze lasts as long as a check of the per-domain
// counts: well under a second, a few seconds at worst. (A variable for the
// tests, which set it before they open a queue.)
var freezeStale = time.Minute

// freezeMark is the metadata value of a freeze.
type freezeMark struct {
	MaxMsgs int64     `json:"max_msgs"` // the real max_msgs
	At      time.Time `json:"at"`       // when frozen, by the server's clock
	Token   string    `json:"token"`    // the maker's
}

// freezeOf reads the freeze mark of sc. An unreadable mark counts as a
// freeze made long ago with an unknown max_msgs.
func freezeOf(sc jetstream.StreamConfig) (freezeMark, bool) {
	v, ok := sc.Metadata[metaFreeze]
	if !ok {
		return freezeMark{}, false
	}
	var m freezeMark
	_ = json.Unmarshal([]byte(v), &m)
	return m, true
}

// serverNow is the server's time of info, or this host's when the server
// does not say (servers before 2.10).
func serverNow(info *jetstream.StreamInfo) time.Time {
	if info.TimeStamp.IsZero() {
		return time.Now()
	}
	return info.TimeStamp
}

// freezeIntake stops new mail for the moment a lowered per-domain cap is
// checked and applied. JetStream trims every domain to a lowered cap on
// update, so mail arriving between the check and the update would be
// deleted. max_msgs 1 refuses all new mail (452, senders retry) and deletes
// nothing (discard-new), so the counts can only fall while they are checked
// and the cap applied. It returns the stream as it is frozen (old's config,
// the frozen state), for the check, and the freeze's token.
func (a *Admin) freezeIntake(ctx context.Context, old *jetstream.StreamInfo) (*jetstream.StreamInfo, string, error) {
	token := rand.Text()
	mark, err := json.Marshal(freezeMark{MaxMsgs: old.Config.MaxMsgs, At: serverNow(old), Token: token})
	if err != nil {
		return nil, "", err
	}
	fc := old.Config
	fc.MaxMsgs = 1
	fc.Metadata = maps.Clone(old.Config.Metadata)
	if fc.Metadata == nil {
		fc.Metadata = map[string]string{}
	}
	fc.Metadata[metaFreeze] = string(mark)
	fs, err := a.js.UpdateStream(ctx, fc)
	if err != nil {
		// The server may have applied it all the same (a lost reply).
		a.unfreezeIntake(token, old.Config)
		return nil, "", err
	}
	if m, ok := freezeOf(fs.CachedInfo().Config); !ok || m.Token != token {
		// A server that drops stream metadata (before 2.10) would keep
		// max_msgs 1 with nothing to tell it from a real one. A fresh
		// context: the caller's may be nearly spent.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := a.js.UpdateStream(rctx, old.Config); err != nil {
			a.log.Error("admin: could not lift an intake freeze the server kept no mark of: set queue.max_msgs again", "max_msgs", old.Config.MaxMsgs, "err", err)
		}
		return nil, "", fmt.Errorf("%w: the server does not keep stream metadata, which lowering the per-domain cap safely needs (nats-server 2.10 or later)", ErrInvalidLimit)
	}
	return &jetstream.StreamInfo{Config: old.Config, State: fs.CachedInfo().State}, token, nil
}

// confirmFreeze checks, just before the change it was made for applies,
// that the freeze named by token is still in force: if somebody lifted it,
// mail may have arrived since the check, and the change must not apply.
func (a *Admin) confirmFreeze(ctx context.Context, token string) error {
	_, held, err := a.freezeHeld(ctx, token)
	if err == nil && !held {
		err = fmt.Errorf("%w: intake was unfrozen by another process during the check; nothing was changed", ErrBusy)
	}
	return err
}

// freezeHeld reads the mail stream afresh and says whether the freeze
// named by token is in force.
func (a *Admin) freezeHeld(ctx context.Context, token string) (*jetstream.StreamInfo, bool, error) {
	s, err := a.js.Stream(ctx, a.cfg.Stream)
	if err != nil {
		return nil, false, err
	}
	info := s.CachedInfo()
	m, frozen := freezeOf(info.Config)
	return info, frozen && m.Token == token, nil
}

// unfreezeIntake restores cfg after freezeIntake when the change did not
// apply (one that applies replaces the frozen config itself), unless the
// freeze named by token is gone already: then somebody else has written
// the config since, and their write stands.
func (a *Admin) unfreezeIntake(token string, cfg jetstream.StreamConfig) {
	// A fresh context: the change's may be what ended.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, held, err := a.freezeHeld(ctx, token)
	if err == nil {
		if !held {
			return
		}
		_, err = a.js.UpdateStream(ctx, cfg)
	}
	if err != nil {
		a.log.Error("admin: could not lift the moment's intake freeze after a limit change that did not apply; running processes lift it within a minute",
			"max_msgs", cfg.MaxMsgs, "err", err)
	}
}

// withoutFreeze returns info as it is without a freeze: the real max_msgs
// (the configured one if the mark does not say), no mark. It returns info
// itself when the stream is not frozen.
func (a *Admin) withoutFreeze(info *jetstream.StreamInfo) *jetstream.StreamInfo {
	m, ok := freezeOf(info.Config)
	if !ok {
		return info
	}
	out := *info
	out.Config.Metadata = maps.Clone(info.Config.Metadata)
	delete(out.Config.Metadata, metaFreeze)
	out.Config.MaxMsgs = m.MaxMsgs
	if m.MaxMsgs <= 0 {
		out.Config.MaxMsgs = a.cfg.MaxMsgs
	}
	return &out
}

// unfrozenStream reads the mail stream for a change of its config. A fresh
// freeze is another process's change in progress: it waits up to
// freezeWait for it to go, then answers ErrBusy. A stale one (its maker
// died) it reads through: the change it makes lifts it.
func (a *Admin) unfrozenStream(ctx context.Context) (jetstream.Stream, *jetstream.StreamInfo, error) {
	deadline := time.Now().Add(freezeWait)
	for {
		s, err := a.js.Stream(ctx, a.cfg.Stream)
		if err != nil {
			return nil, nil, err
		}
		info := s.CachedInfo()
		m, frozen := freezeOf(info.Config)
		if !frozen {
			return s, info, nil
		}
		if age := serverNow(info).Sub(m.At); age > freezeStale {
			a.log.Warn("admin: lifting a stale intake freeze: the limit change that made it did not finish", "frozen_for", age.Round(time.Second))
			return s, a.withoutFreeze(info), nil
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%w: intake is frozen for it since %s; nothing was changed, try again", ErrBusy, m.At.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// freezeSighting is a process's memory of a freeze mark: which, and since
// when by its own clock.
type freezeSighting struct {
	token string
	since time.Time
}

// freezeCheckEvery is how often Run looks for a freeze left behind.
func freezeCheckEvery() time.Duration { return max(freezeStale/10, 10*time.Millisecond) }

// Run lifts intake freezes left behind by a limit change whose process died
// between freezing and changing the limits, until ctx ends: without it mail
// would be refused (452) until somebody noticed. Every Levee process runs
// it, so that any one of them that outlives the maker lifts the freeze
// within about freezeStale.
func (a *Admin) Run(ctx context.Context) {
	t := time.NewTicker(freezeCheckEvery())
	defer t.Stop()
	for {
		// At once, then every tick: a process restarted after its own
		// change died half-way must not leave intake frozen a minute more.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if s, err := a.js.Stream(cctx, a.cfg.Stream); err == nil {
			a.liftStaleFreeze(cctx, s.CachedInfo())
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// liftStaleFreeze lifts a freeze that is stale: older than freezeStale by
// the server's clock (as unfrozenStream judges it), or seen unchanged that
// long by this process's own clock, which no skew between hosts can fool.
func (a *Admin) liftStaleFreeze(ctx context.Context, info *jetstream.StreamInfo) {
	m, frozen := freezeOf(info.Config)
	switch {
	case !frozen:
		a.seen = freezeSighting{}
		return
	case serverNow(info).Sub(m.At) > freezeStale:
	case m.Token != a.seen.token || a.seen.since.IsZero():
		a.seen = freezeSighting{token: m.Token, since: time.Now()}
		return
	case time.Since(a.seen.since) < freezeStale:
		return
	}
	// Read it again: the config written back must be the latest.
	fresh, held, err := a.freezeHeld(ctx, m.Token)
	if err != nil || !held {
		return
	}
	unfrozen := a.withoutFreeze(fresh).Config
	if _, err := a.js.UpdateStream(ctx, unfrozen); err != nil {
		a.log.Warn("admin: could not lift a stale intake freeze", "frozen_at", m.At, "err", err)
		return
	}
	a.seen = freezeSighting{}
	a.log.Warn("admin: lifted an intake freeze left by a limit change that did not finish (its process died?)",
		"frozen_at", m.At, "max_msgs", unfrozen.MaxMsgs)
}
