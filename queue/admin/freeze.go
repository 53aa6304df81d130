package admin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
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

// mailStream is one of the layout's mail streams as read for a change: its
// partition and its info, without a stale freeze.
type mailStream struct {
	p    queue.Partition
	info *jetstream.StreamInfo
}

// freezeIntake stops new mail for the moment a lowered per-domain cap is
// checked and applied. JetStream trims every domain to a lowered cap on
// update, so mail arriving between the check and the update would be
// deleted. max_msgs 1 refuses all new mail (452, senders retry) and deletes
// nothing (discard-new), so the counts can only fall while they are checked
// and the cap applied. Every partition of the layout is frozen, under one
// token. It returns each stream as it is frozen (old's config, the frozen
// state), for the check, and the freeze's token; on an error nothing stays
// frozen.
func (a *Admin) freezeIntake(ctx context.Context, olds []mailStream) ([]*jetstream.StreamInfo, string, error) {
	token := rand.Text()
	checked := make([]*jetstream.StreamInfo, 0, len(olds))
	for i, old := range olds {
		frozen, err := a.freezeOne(ctx, old.info, token)
		if err != nil {
			// The last may have applied all the same (a lost reply).
			a.unfreezeIntake(token, olds[:i+1])
			return nil, "", err
		}
		checked = append(checked, frozen)
	}
	return checked, token, nil
}

// freezeOne freezes one stream under token.
func (a *Admin) freezeOne(ctx context.Context, old *jetstream.StreamInfo, token string) (*jetstream.StreamInfo, error) {
	mark, err := json.Marshal(freezeMark{MaxMsgs: old.Config.MaxMsgs, At: serverNow(old), Token: token})
	if err != nil {
		return nil, err
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
		return nil, err
	}
	if m, ok := freezeOf(fs.CachedInfo().Config); !ok || m.Token != token {
		// A server that drops stream metadata (before 2.10) would keep
		// max_msgs 1 with nothing to tell it from a real one. A fresh
		// context: the caller's may be nearly spent.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := a.js.UpdateStream(rctx, old.Config); err != nil {
			a.log.Error("admin: could not lift an intake freeze the server kept no mark of: set queue.max_msgs again", "stream", old.Config.Name, "max_msgs", old.Config.MaxMsgs, "err", err)
		}
		return nil, fmt.Errorf("%w: the server does not keep stream metadata, which lowering the per-domain cap safely needs (nats-server 2.10 or later)", ErrInvalidLimit)
	}
	return &jetstream.StreamInfo{Config: old.Config, State: fs.CachedInfo().State}, nil
}

// confirmFreeze checks, just before the change it was made for applies,
// that the freeze named by token is still in force on every stream: if
// somebody lifted it, mail may have arrived since the check, and the change
// must not apply.
func (a *Admin) confirmFreeze(ctx context.Context, olds []mailStream, token string) error {
	for _, old := range olds {
		_, held, err := a.freezeHeld(ctx, old.p.Stream, token)
		if err != nil {
			return err
		}
		if !held {
			return fmt.Errorf("%w: intake was unfrozen by another process during the check; nothing was changed", ErrBusy)
		}
	}
	return nil
}

// freezeHeld reads a mail stream afresh and says whether the freeze named
// by token is in force there.
func (a *Admin) freezeHeld(ctx context.Context, stream, token string) (*jetstream.StreamInfo, bool, error) {
	s, err := a.js.Stream(ctx, stream)
	if err != nil {
		return nil, false, err
	}
	info := s.CachedInfo()
	m, frozen := freezeOf(info.Config)
	return info, frozen && m.Token == token, nil
}

// unfreezeIntake restores the streams' configs after freezeIntake when the
// change did not apply (one that applies replaces the frozen config
// itself), except where the freeze named by token is gone already: then
// somebody else has written the config since, and their write stands.
func (a *Admin) unfreezeIntake(token string, olds []mailStream) {
	// A fresh context: the change's may be what ended.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, old := range olds {
		_, held, err := a.freezeHeld(ctx, old.p.Stream, token)
		if err == nil {
			if !held {
				continue
			}
			_, err = a.js.UpdateStream(ctx, old.info.Config)
		}
		if err != nil {
			a.log.Error("admin: could not lift the moment's intake freeze after a limit change that did not apply; running processes lift it within a minute",
				"stream", old.p.Stream, "max_msgs", old.info.Config.MaxMsgs, "err", err)
		}
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
		// A mark without the real limit (never written so): the
		// configured total's smallest share for the stream's layout.
		n := a.cfg.Partitions
		if v, err := strconv.Atoi(info.Config.Metadata[queue.MetadataLayout]); err == nil && v > 0 {
			n = v
		}
		out.Config.MaxMsgs = queue.Share(a.cfg.MaxMsgs, n-1, n)
	}
	return &out
}

// unfrozenLayout reads the layout's mail streams for a change of their
// config. A fresh freeze on any is another process's change in progress:
// it waits up to freezeWait for it to go, then answers ErrBusy. A stale one
// (its maker died) it reads through: the change it makes lifts it.
func (a *Admin) unfrozenLayout(ctx context.Context) ([]mailStream, error) {
	deadline := time.Now().Add(freezeWait)
	for {
		streams, busy, err := a.readLayout(ctx)
		if err != nil || busy == nil {
			return streams, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: intake is frozen for it since %s; nothing was changed, try again", ErrBusy, busy.At.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// readLayout reads the layout's mail streams once; busy is a fresh freeze
// mark found on one of them (nil when there is none).
func (a *Admin) readLayout(ctx context.Context) (streams []mailStream, busy *freezeMark, err error) {
	layout, handles, err := a.layoutStreams(ctx)
	if err != nil {
		return nil, nil, err
	}
	for i, p := range layout {
		info := handles[i].CachedInfo()
		if m, frozen := freezeOf(info.Config); frozen {
			if age := serverNow(info).Sub(m.At); age <= freezeStale {
				return nil, &m, nil
			}
			a.log.Warn("admin: lifting a stale intake freeze: the limit change that made it did not finish", "stream", p.Stream, "frozen_for", serverNow(info).Sub(m.At).Round(time.Second))
			info = a.withoutFreeze(info)
		}
		streams = append(streams, mailStream{p: p, info: info})
	}
	return streams, nil, nil
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
		layout, _ := a.layout(cctx)
		for _, p := range layout {
			if s, err := a.js.Stream(cctx, p.Stream); err == nil {
				a.liftStaleFreeze(cctx, s.CachedInfo())
			}
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
// the server's clock (as readLayout judges it), or seen unchanged that
// long by this process's own clock, which no skew between hosts can fool.
func (a *Admin) liftStaleFreeze(ctx context.Context, info *jetstream.StreamInfo) {
	name := info.Config.Name
	m, frozen := freezeOf(info.Config)
	seen := a.seen[name]
	switch {
	case !frozen:
		delete(a.seen, name)
		return
	case serverNow(info).Sub(m.At) > freezeStale:
	case m.Token != seen.token || seen.since.IsZero():
		a.seen[name] = freezeSighting{token: m.Token, since: time.Now()}
		return
	case time.Since(seen.since) < freezeStale:
		return
	}
	// Read it again: the config written back must be the latest.
	fresh, held, err := a.freezeHeld(ctx, name, m.Token)
	if err != nil || !held {
		return
	}
	unfrozen := a.withoutFreeze(fresh).Config
	if _, err := a.js.UpdateStream(ctx, unfrozen); err != nil {
		a.log.Warn("admin: could not lift a stale intake freeze", "stream", name, "frozen_at", m.At, "err", err)
		return
	}
	delete(a.seen, name)
	a.log.Warn("admin: lifted an intake freeze left by a limit change that did not finish (its process died?)",
		"stream", name, "frozen_at", m.At, "max_msgs", unfrozen.MaxMsgs)
}
