package loadtest

import (
	"sort"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Message outcomes, final for the run.
const (
	stateAccepted = iota + 1
	stateFailed   // a 5xx
	stateExpired  // still refused with 4xx when the retry time ran out
	stateUnsent   // the run ended (drain timeout, interrupt) before it was accepted
)

// final is what the audit needs of one message.
type final struct {
	seq        uint64
	state      uint8
	attempts   uint16
	due        time.Duration // intended arrival, from the start
	acceptedAt time.Time
}

// bucket is one interval of the time series.
type bucket struct {
	offered, attempts, accepted, deferred, failed, connErrors int64
	// gauges, last sampled value in the interval
	backlog, retrying, sessions int64
	sampled                     bool
	smtp                        *histogram // arrival -> 250 of messages accepted in the interval
}

// stats gathers what the senders saw. One mutex: the critical sections are
// a few increments, far cheaper than the SMTP round trips around them.
type stats struct {
	mu       sync.Mutex
	start    time.Time
	interval time.Duration
	buckets  []bucket

	offered, attempts, accepted, deferred, failed, expired, unsent int64
	connErrors, netErrors, rcptRejected, retries                   int64
	replies                                                        map[string]int64
	smtpLat, txLat                                                 *histogram
	finals                                                         []final
}

func newStats(start time.Time, interval time.Duration) *stats {
	return &stats{start: start, interval: interval, replies: map[string]int64{},
		smtpLat: newHistogram(), txLat: newHistogram()}
}

// at returns the bucket for t, growing the series; mu held.
func (s *stats) at(t time.Time) *bucket {
	i := max(0, int(t.Sub(s.start)/s.interval))
	for len(s.buckets) <= i {
		s.buckets = append(s.buckets, bucket{})
	}
	return &s.buckets[i]
}

func (s *stats) offer(t time.Time) {
	s.mu.Lock()
	s.offered++
	s.at(t).offered++
	s.mu.Unlock()
}

func (s *stats) attempt(t time.Time) {
	s.mu.Lock()
	s.attempts++
	s.at(t).attempts++
	s.mu.Unlock()
}

func (s *stats) accept(j *job, began, now time.Time, rejectedRcpts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted++
	s.rcptRejected += int64(rejectedRcpts)
	b := s.at(now)
	b.accepted++
	lat := now.Sub(j.due)
	s.smtpLat.Record(lat)
	s.txLat.Record(now.Sub(began))
	if b.smtp == nil {
		b.smtp = newHistogram()
	}
	b.smtp.Record(lat)
	s.finals = append(s.finals, final{seq: j.seq, state: stateAccepted, attempts: uint16(min(j.attempts, 65535)), due: j.due.Sub(s.start), acceptedAt: now})
}

// refuse counts a reply that was not 250. A 4xx is a deferral (retried);
// a 5xx a failure.
func (s *stats) refuse(e *smtp.SMTPError, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies[replyKey(e)]++
	if e.Code/100 == 4 {
		s.deferred++
		s.at(now).deferred++
	}
}

func (s *stats) connError(now time.Time) {
	s.mu.Lock()
	s.connErrors++
	s.at(now).connErrors++
	s.mu.Unlock()
}

func (s *stats) netError() {
	s.mu.Lock()
	s.netErrors++
	s.mu.Unlock()
}

func (s *stats) retry() {
	s.mu.Lock()
	s.retries++
	s.mu.Unlock()
}

// finish records a message that will not be accepted in this run.
func (s *stats) finish(j *job, state uint8, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch state {
	case stateFailed:
		s.failed++
		s.at(now).failed++
	case stateExpired:
		s.expired++
	case stateUnsent:
		s.unsent++
	}
	s.finals = append(s.finals, final{seq: j.seq, state: state, attempts: uint16(min(j.attempts, 65535)), due: j.due.Sub(s.start)})
}

func (s *stats) sample(t time.Time, backlog, retrying, sessions int64) {
	s.mu.Lock()
	b := s.at(t)
	b.backlog, b.retrying, b.sessions, b.sampled = backlog, retrying, sessions, true
	s.mu.Unlock()
}

// snapshot is the live figures for the progress line.
type snapshot struct {
	offered, accepted, deferred, failed, expired, unsent int64
}

func (s *stats) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return snapshot{s.offered, s.accepted, s.deferred, s.failed, s.expired, s.unsent}
}

// sortedReplies lists the reply counts, most frequent first.
func sortedReplies(m map[string]int64) []ReplyCount {
	out := make([]ReplyCount, 0, len(m))
	for k, v := range m {
		out = append(out, ReplyCount{Reply: k, Count: v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Reply < out[j].Reply
	})
	return out
}
