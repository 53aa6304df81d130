package admin

import (
	"context"
	"sync"
	"time"
)

// Operator is what an operator can do to a queue: the Admin's tools, which
// the ops API serves over HTTP and the CLI reaches through either.
type Operator interface {
	Status(ctx context.Context) (Status, error)
	Limits(ctx context.Context) (LimitsReport, error)
	UpdateLimits(ctx context.Context, l LimitsChange) (LimitsUpdate, error)
	DeadLetters(ctx context.Context, after uint64, limit int) ([]DeadLetterInfo, uint64, error)
	DeadLetter(ctx context.Context, seq uint64) (DeadLetterInfo, []byte, error)
	Replay(ctx context.Context, seq uint64) error
	ReplayAll(ctx context.Context) (int, error)
	Purge(ctx context.Context, seq uint64) error
	PurgeAll(ctx context.Context) (uint64, error)
}

var _ Operator = (*Admin)(nil)

// Ops is what an ops API serves: the Admin's tools, with Status carrying
// rates and History kept by a Sampler that Run drives.
type Ops struct {
	*Admin
	sampler *Sampler

	used    chan struct{} // closed by the first Status or History
	useOnce sync.Once
}

// NewOps samples a's status with the Sampler defaults.
func NewOps(a *Admin) *Ops {
	return &Ops{Admin: a, sampler: NewSampler(a, 0, 0, 0), used: make(chan struct{})}
}

// Run does the admin side's background work until ctx is done: it lifts
// intake freezes left behind (Admin.Run), and samples the status for the
// history from when the status is first asked for: a full status costs a
// per-domain stream info and a stats round over every process, and most
// processes of a deployment (smtpd, workers) never serve a dashboard.
func (o *Ops) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { o.Admin.Run(ctx) })
	select {
	case <-o.used:
		o.sampler.Run(ctx)
	case <-ctx.Done():
	}
}

func (o *Ops) markUsed() { o.useOnce.Do(func() { close(o.used) }) }

// Status is a fresh status with rates over the last few samples.
func (o *Ops) Status(ctx context.Context) (Status, error) {
	o.markUsed()
	return o.sampler.Status(ctx)
}

// History is the sampled history since the given time.
func (o *Ops) History(since time.Time) []Sample {
	o.markUsed()
	return o.sampler.History(since)
}

// SampleInterval is the time between History samples.
func (o *Ops) SampleInterval() time.Duration { return o.sampler.Interval() }
