package ingest

import (
	"math"
	"sync"
	"time"
)

// pressureTau is the time constant of the intake pressure's average: long
// enough that one slow fsync is not a surge, short enough that the workers
// step back, and come back once it ended, within half a second (a second's
// average kept them out for 2-3 s after every surge).
const pressureTau = 250 * time.Millisecond

// rateTau is the time constant of the intake rate's average: a second, so
// that a steady 100 msgs/s reads within about a tenth of itself, and a
// surge's end shows within two or three.
const rateTau = time.Second

// pressure is how many SMTP transactions are waiting on the queue (their
// message read, its publish not yet answered), averaged over about
// pressureTau. By Little's law it is the accept rate times the publish
// latency: near 0 while the receiver keeps up, and rising with both when a
// surge makes senders wait. A slow sender on a slow link does not count:
// its time goes into reading, before the publish.
//
// It also keeps the rate at which publishes are answered (the intake
// rate): pressure alone cannot tell a surge from the same senders waiting
// longer because the drain beside them took the CPU (see worker's
// intakeFirst).
type pressure struct {
	mu   sync.Mutex
	now  func() time.Time
	n    int     // transactions waiting on the queue now
	avg  float64 // n averaged over about pressureTau, as of at
	rate float64 // publishes answered per second, averaged over about rateTau, as of at
	at   time.Time
}

func newPressure(now func() time.Time) *pressure {
	return &pressure{now: now, at: now()}
}

// advance decays avg towards n, which held since at (it changes only at
// the calls that advance first), and rate towards 0.
func (p *pressure) advance() {
	t := p.now()
	if dt := t.Sub(p.at); dt > 0 {
		k := math.Exp(-float64(dt) / float64(pressureTau))
		p.avg = p.avg*k + float64(p.n)*(1-k)
		p.rate *= math.Exp(-float64(dt) / float64(rateTau))
		p.at = t
	}
}

// begin and end bracket one publish.
func (p *pressure) begin() { p.add(1) }
func (p *pressure) end()   { p.add(-1) }

func (p *pressure) add(d int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance()
	p.n += d
	if d < 0 {
		// Each answer adds 1/rateTau: the decayed sum of those impulses
		// averages to the answers per second.
		p.rate += 1 / rateTau.Seconds()
	}
}

// perSecond is the intake rate now: publishes answered per second.
func (p *pressure) perSecond() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance()
	return p.rate
}

// value is the average now.
func (p *pressure) value() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance()
	return p.avg
}
