package queue

import (
	"context"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Lowering the per-domain cap on a stream that holds mail freezes intake
// for a moment (see freezeIntake). The freeze is written into the stream
// itself, so every reader of the stream's config can tell a frozen max_msgs
// of 1 from a real one:
//   - another process changing limits or starting meanwhile builds on the
//     real max_msgs, instead of making the freeze permanent;
//   - a freeze whose maker died (a crash between freeze and change) is
//     lifted by the next start or limit change, and by any running
//     process's monitor once it is older than freezeStale.
const (
	metaFrozenMaxMsgs = "levee.frozen_max_msgs" // the real max_msgs
	metaFrozenAt      = "levee.frozen_at"       // RFC 3339, when frozen

	// freezeStale is how long a freeze may last before running processes
	// take its maker for dead. A freeze lasts as long as a check of the
	// per-domain counts: well under a second, a few seconds at worst.
	freezeStale = time.Minute
)

// freezeIntake stops new mail for the moment a lowered per-domain cap is
// checked and applied. JetStream trims every domain to a lowered cap on
// update, so mail arriving between the check and the update would be
// deleted. max_msgs 1 refuses all new mail (452, senders retry) and deletes
// nothing (discard-new), so the counts can only fall while they are checked
// and the cap applied. It returns the stream as it is frozen: cfg (the
// config to restore) with the frozen state, for the check.
func (a *Admin) freezeIntake(ctx context.Context, cfg jetstream.StreamConfig) (*jetstream.StreamInfo, error) {
	fc := cfg
	fc.MaxMsgs = 1
	fc.Metadata = maps.Clone(cfg.Metadata)
	if fc.Metadata == nil {
		fc.Metadata = map[string]string{}
	}
	fc.Metadata[metaFrozenMaxMsgs] = strconv.FormatInt(cfg.MaxMsgs, 10)
	fc.Metadata[metaFrozenAt] = time.Now().UTC().Format(time.RFC3339Nano)
	fs, err := a.js.UpdateStream(ctx, fc)
	if err != nil {
		return nil, err
	}
	return &jetstream.StreamInfo{Config: cfg, State: fs.CachedInfo().State}, nil
}

// unfreezeIntake restores cfg after freezeIntake when the change failed (a
// change that applies replaces the frozen config itself).
func (a *Admin) unfreezeIntake(cfg jetstream.StreamConfig) {
	// A fresh context: the change's may be what ended.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.js.UpdateStream(ctx, cfg); err != nil {
		a.log.Error("queue: could not lift the moment's max_msgs 1 after a failed limit change; the next start or limit change will", "max_msgs", cfg.MaxMsgs, "err", err)
	}
}

// withoutFreeze returns info with the config as it is without a freeze:
// the real max_msgs, and no freeze marks. It returns info itself when the
// stream is not frozen.
func withoutFreeze(info *jetstream.StreamInfo) *jetstream.StreamInfo {
	saved, ok := info.Config.Metadata[metaFrozenMaxMsgs]
	if !ok {
		return info
	}
	out := *info
	out.Config.Metadata = maps.Clone(info.Config.Metadata)
	delete(out.Config.Metadata, metaFrozenMaxMsgs)
	delete(out.Config.Metadata, metaFrozenAt)
	if n, err := strconv.ParseInt(saved, 10, 64); err == nil && n > 0 {
		out.Config.MaxMsgs = n
	}
	return &out
}

// frozenSince says when the stream described by cfg was frozen (false when
// it is not, or the mark is unreadable, which counts as long ago).
func frozenSince(cfg jetstream.StreamConfig) (time.Time, bool) {
	if _, ok := cfg.Metadata[metaFrozenMaxMsgs]; !ok {
		return time.Time{}, false
	}
	at, _ := time.Parse(time.RFC3339Nano, cfg.Metadata[metaFrozenAt])
	return at, true
}

// liftStaleFreeze lifts a freeze older than freezeStale: its maker died
// between freezing and changing the limits, and mail would be refused
// (452) until somebody noticed.
func (a *Admin) liftStaleFreeze(ctx context.Context, info *jetstream.StreamInfo) {
	at, frozen := frozenSince(info.Config)
	if !frozen || time.Since(at) < freezeStale {
		return
	}
	unfrozen := withoutFreeze(info).Config
	if _, err := a.js.UpdateStream(ctx, unfrozen); err != nil {
		a.log.Warn("queue: could not lift a stale intake freeze", "frozen_at", at, "err", err)
		return
	}
	a.log.Warn("queue: lifted an intake freeze left by a limit change that did not finish (its process died?)",
		"frozen_at", at, "max_msgs", unfrozen.MaxMsgs)
}
