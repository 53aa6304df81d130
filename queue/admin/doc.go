// Package admin is the operator's side of the queue: what `levee queue`,
// `levee dlq`, the ops API and the dashboard show and change while Levee
// runs. The queue package moves mail; this one only looks at the streams
// and changes what an operator asks for.
//
// It owns:
//   - the status figures: depth, fill against each limit, consumer,
//     oldest message, top recipient domains, dead letters, and the fleet's
//     totals (package fleet); rates and the dashboard's history (Sampler);
//   - the live limits: the one writer of an existing stream's limits
//     (UpdateLimits), which refuses what would delete queued mail or bounce
//     mail the receivers accept, and freezes intake for the moment a
//     lowered per-domain cap is checked and applied (freeze.go); and how
//     the live limits differ from the config (drift);
//   - the dead letters: list, show, replay (exactly once), purge.
//
// Its errors (errors.go) carry stable reason names, so that the ops API and
// its clients agree on them without parsing text.
//
// It exports about 135 identifiers, more than a package of one job
// usually needs: some 90 of them are the fields of the documents the ops
// API serves and `levee queue status --json` prints (Status and its parts,
// StreamLimits, LimitsReport, DeadLetterInfo, Sample), which are the API's
// schema and stay in one place with the code that fills them.
package admin
