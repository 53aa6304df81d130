package app

import (
	"path/filepath"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/internal/diskspace"
	"github.com/levee-mail/levee/store/postgres"
)

// DefaultDataMinFree is data_min_free's default, 1 GiB: room for what may
// still be written after the floor's last look said yes. Everything the
// receivers hold may be queued at once (smtp.max_bytes_in_flight, 128 MiB
// by default) and the workers then write it again into SQLite, whose WAL
// holds it a second time until a checkpoint: some 400 MiB, plus the queue's
// and the store's own files growing by a block. Twice that is a margin a
// laptop running `make run` has, and a fixed size, unlike a percentage,
// means the same on a 20 GiB volume as on 2 TiB. A deployment with larger
// in-flight budgets or messages raises it.
const DefaultDataMinFree = 1 << 30

// diskFloor watches the filesystems this process writes mail to: the
// embedded JetStream's (none with an external one) and the SQLite store's
// when this process opens it (none for PostgreSQL). Both are measured for
// levee_disk_free_bytes; a floor on a volume no receiver here writes to
// still shows in the metric and the alert.
func (l *Levee) diskFloor() (*diskspace.Floor, error) {
	var vols []diskspace.Volume
	if l.cfg.Queue.URL == "" {
		vols = append(vols, diskspace.Volume{Name: "jetstream", Path: l.cfg.Queue.DataDir})
	}
	if l.Store != nil && !postgres.IsURL(l.cfg.Store) {
		vols = append(vols, diskspace.Volume{Name: "store", Path: filepath.Dir(l.cfg.Store)})
	}
	return diskspace.NewFloor(diskspace.FloorConfig{
		MinFree: uint64(l.cfg.DataMinFree), Volumes: vols, Registerer: l.Registry, Log: l.log,
	})
}

// floorFill is the queue's fill as the receiver's watermark sees it: full
// (1) while a volume is below data_min_free, so that MAIL FROM gets 452
// 4.3.1 before a write fails, and the queue's own fill otherwise. The
// watermark's hysteresis then lets mail in again once the space is back
// and the queue is below smtp.low_watermark.
type floorFill struct {
	queue ingest.FillGauge
	floor *diskspace.Floor
}

func (f floorFill) Fill() float64 {
	if f.floor.Below() != nil {
		return 1
	}
	return f.queue.Fill()
}
