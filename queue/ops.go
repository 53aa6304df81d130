package queue

import (
	"context"
	"time"
)

// Operator is what an operator can do to a queue: the Admin's tools, which
// the ops API serves over HTTP and the CLI reaches through either.
type Operator interface {
	Status(ctx context.Context) (Status, error)
	Limits(ctx context.Context) (StreamLimits, error)
	UpdateLimits(ctx context.Context, l Limits) (LimitsUpdate, error)
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
}

// NewOps samples a's status with the Sampler defaults.
func NewOps(a *Admin) *Ops {
	return &Ops{Admin: a, sampler: NewSampler(a, 0, 0, 0)}
}

// Run samples until ctx is done.
func (o *Ops) Run(ctx context.Context) { o.sampler.Run(ctx) }

// Status is a fresh status with rates over the last few samples.
func (o *Ops) Status(ctx context.Context) (Status, error) { return o.sampler.Status(ctx) }

// History is the sampled history since the given time.
func (o *Ops) History(since time.Time) []Sample { return o.sampler.History(since) }

// SampleInterval is the time between History samples.
func (o *Ops) SampleInterval() time.Duration { return o.sampler.Interval() }
