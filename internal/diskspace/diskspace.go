package diskspace

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Free is the space an unprivileged process can still write on the
// filesystem that holds path (statfs: available blocks, not the blocks
// reserved for root).
func Free(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("diskspace: statfs %s: %w", path, err)
	}
	// The fields' types differ between systems, hence the conversions.
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// Volume is a directory Levee writes to, named for the metric's label.
type Volume struct {
	Name string // "jetstream", "store"
	Path string
}

// FloorConfig configures a Floor.
type FloorConfig struct {
	// MinFree is the floor in bytes; 0 measures without refusing.
	MinFree uint64
	// Volumes to watch; those on one filesystem are measured alike.
	Volumes []Volume
	// Every is the interval between measurements (1s when 0).
	Every time.Duration
	// Registerer receives levee_disk_free_bytes and
	// levee_disk_min_free_bytes; nil registers nothing.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Floor watches the free space of its volumes. Below is cheap: it reads
// the last measurement, which Run refreshes in the background, so a hung
// statfs (a dead NFS mount) never holds up a caller.
type Floor struct {
	cfg  FloorConfig
	free *prometheus.GaugeVec

	mu    sync.Mutex
	below error
}

// NewFloor measures the volumes once and registers the metrics.
func NewFloor(cfg FloorConfig) (*Floor, error) {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f := &Floor{cfg: cfg, free: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "levee_disk_free_bytes",
		Help: "Free space on the filesystem of a directory Levee writes to, by volume: jetstream (the embedded JetStream store), store (the SQLite store).",
	}, []string{"volume"})}
	min := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "levee_disk_min_free_bytes",
		Help: "The free-space floor (data_min_free): below it on any volume, MAIL FROM is deferred with 452 4.3.1; 0 when off.",
	})
	min.Set(float64(cfg.MinFree))
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{f.free, min} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	f.measure()
	return f, nil
}

// Below is nil while every volume has at least the floor free at the last
// measurement, else which one does not and by how much.
func (f *Floor) Below() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.below
}

// Run measures every FloorConfig.Every until ctx ends.
func (f *Floor) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.measure()
		}
	}
}

func (f *Floor) measure() {
	var below error
	for _, v := range f.cfg.Volumes {
		free, err := Free(v.Path)
		if err != nil {
			// Keep the last figure: a failed statfs says nothing about
			// the space, and refusing mail for it would be a guess.
			f.cfg.Log.Warn("diskspace: cannot measure free space", "volume", v.Name, "err", err)
			continue
		}
		f.free.WithLabelValues(v.Name).Set(float64(free))
		if free < f.cfg.MinFree && below == nil {
			below = fmt.Errorf("%s volume (%s) has %d bytes free, below data_min_free (%d)", v.Name, v.Path, free, f.cfg.MinFree)
		}
	}
	f.mu.Lock()
	was := f.below
	f.below = below
	f.mu.Unlock()
	switch {
	case below != nil && was == nil:
		f.cfg.Log.Warn("diskspace: free space below the floor: new mail is deferred (452 4.3.1) until it is back", "err", below)
	case below == nil && was != nil:
		f.cfg.Log.Info("diskspace: free space is above the floor again: taking mail")
	}
}
