package ingest

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// TestPressureIsTheAverageOfWaitingTransactions: the average follows the
// count of publishes in flight with time constant pressureTau.
func TestPressureIsTheAverageOfWaitingTransactions(t *testing.T) {
	p, advance := clockedPressure()
	p.begin()
	p.begin()
	advance(pressureTau)
	want := 2 * (1 - math.Exp(-1))
	if got := p.value(); math.Abs(got-want) > 1e-9 {
		t.Errorf("two in flight for one time constant: %v, want %v", got, want)
	}
	p.end()
	p.end()
	advance(3 * pressureTau)
	wantDecayedThreeTaus(t, "the pressure after both ended", want, p.value())
}

// TestIntakeRateIsThePublishesAnsweredPerSecond: answers every 10 ms read
// as 100 a second once a few time constants have passed, whatever their
// latency, and the rate decays with rateTau once they stop.
func TestIntakeRateIsThePublishesAnsweredPerSecond(t *testing.T) {
	p, advance := clockedPressure()
	for range 500 { // 5 s
		p.begin()
		advance(10 * time.Millisecond)
		p.end()
	}
	got := p.perSecond()
	if math.Abs(got-100) > 5 {
		t.Errorf("one answer every 10 ms for 5 s: %v a second, want about 100", got)
	}
	advance(3 * rateTau)
	wantDecayedThreeTaus(t, "the rate after the last answer", got, p.perSecond())
}

// TestIntakeRateCountsAnswersNotStarts: publishes in flight add nothing to
// the rate until they are answered.
func TestIntakeRateCountsAnswersNotStarts(t *testing.T) {
	p, advance := clockedPressure()
	for range 5 {
		p.begin()
	}
	advance(rateTau)
	if r := p.perSecond(); r != 0 {
		t.Errorf("five publishes unanswered for a second: rate %v, want 0", r)
	}
	for range 5 {
		p.end()
	}
	if r, want := p.perSecond(), 5/rateTau.Seconds(); math.Abs(r-want) > 1e-9 {
		t.Errorf("five answered at once: rate %v, want %v", r, want)
	}
}

// clockedPressure is a pressure on a clock the test advances.
func clockedPressure() (*pressure, func(time.Duration)) {
	now := time.Unix(0, 0)
	return newPressure(func() time.Time { return now }), func(d time.Duration) { now = now.Add(d) }
}

// wantDecayedThreeTaus checks that after is before decayed by three time
// constants.
func wantDecayedThreeTaus(t *testing.T, what string, before, after float64) {
	t.Helper()
	if want := before * math.Exp(-3); math.Abs(after-want) > 1e-9 {
		t.Errorf("%s, three time constants later: %v, want %v", what, after, want)
	}
}

// TestPressureRisesWhileSendersWaitOnTheQueue: sessions whose publish has
// not been answered raise Server.Pressure (and its gauge) towards their
// number; answered, it falls back.
func TestPressureRisesWhileSendersWaitOnTheQueue(t *testing.T) {
	release := make(chan struct{})
	pub := blockingPublisher(release)
	srv, addr := startServer(t, baseConfig(), pub, nil)
	if p := srv.Pressure(); p != 0 {
		t.Fatalf("pressure %v with nobody connected", p)
	}
	const waiting = 4
	replies := make(chan string, waiting)
	for i := range waiting {
		c := greet(t, addr)
		go func() {
			r := c.send("s@client.test", []string{"r@example.com"}, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i))
			replies <- r.status()
		}()
	}
	waitFor(t, "four publishes in flight", func() bool { return pub.calls.Load() == waiting })
	waitFor(t, "pressure above 2", func() bool { return srv.Pressure() > 2 })
	if p := srv.Pressure(); p > waiting {
		t.Errorf("pressure %v above the %d transactions waiting", p, waiting)
	}
	close(release)
	for range waiting {
		if got := <-replies; !strings.HasPrefix(got, "250") {
			t.Errorf("reply %s, want 250", got)
		}
	}
	// Four answers: at most four a second, averaged over rateTau, and
	// decaying from there.
	if r := srv.IntakeRate(); r <= 0 || r > waiting/rateTau.Seconds() {
		t.Errorf("intake rate %v after %d answers, want (0, %v]", r, waiting, waiting/rateTau.Seconds())
	}
	waitFor(t, "pressure back under 1", func() bool { return srv.Pressure() < 1 })
}
