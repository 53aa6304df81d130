package queue

import (
	"context"
	"time"
)

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
