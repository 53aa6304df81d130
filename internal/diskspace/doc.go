// Package diskspace measures the free space of the filesystems Levee
// writes to (the embedded JetStream store, the SQLite store) and keeps a
// floor under it, as Postfix's queue_minfree does: below the floor the
// receiver defers new mail (452 4.3.1) while writes still succeed, instead
// of taking mail that then meets a full disk.
//
// It measures and reports; what to refuse is the caller's decision (app
// turns Floor.Below into a full queue for the receiver's watermark).
package diskspace
