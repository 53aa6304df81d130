package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// maxLookup is how many Message-IDs one look-up request carries (Levee's
// limit for POST /api/v1/messages/lookup).
const maxLookup = 1000

// pollWindow is how many of the oldest pending messages a polling round
// asks for while the drain is under way. The drain stores them first, so
// asking for them says how far it got; asking for every pending message
// each round would load the API with the audit's own look-ups (tens of
// thousands a second after a surge) exactly while the readers' latency
// during the drain is being measured.
const pollWindow = 100

// everythingEvery: a polling round whose window found nothing is followed
// by one that asks for every pending message, at most once in this many
// polls (the oldest might be lost while the rest is stored).
const everythingEvery = 10

// AuditResult says whether every accepted message was stored exactly once.
type AuditResult struct {
	// Complete: every accepted message was found before the deadline.
	Complete bool `json:"complete"`
	// Accepted is the number of messages answered 250, all checked.
	Accepted int64 `json:"accepted"`
	// Stored is how many of them were found at least once.
	Stored int64 `json:"stored"`
	// Lost were answered 250 and not stored by the deadline: the last
	// look-up of each answered, without it.
	Lost int64 `json:"lost"`
	// Unchecked were answered 250 and could not be looked up at the end:
	// the API did not answer (Error says how). Neither stored nor lost.
	Unchecked int64 `json:"unchecked"`
	// Duplicated messages are stored more than once; ExtraCopies counts
	// the copies beyond the first.
	Duplicated  int64 `json:"duplicated"`
	ExtraCopies int64 `json:"extra_copies"`
	// Late were stored more than LateAfter after their 250.
	Late      int64   `json:"late"`
	LateAfter float64 `json:"late_after"`
	// StoredDespiteRefusal are messages the sender never saw a 250 for
	// (failed, given up, unsent) that were stored anyway: usually a 4xx
	// after the message was already queued, which a real MTA would have
	// retried into a duplicate the server must recognise.
	StoredDespiteRefusal int64 `json:"stored_despite_refusal"`
	// EndToEnd is 250 (client clock) -> stored_at (server clock).
	EndToEnd Quantiles `json:"end_to_end"`
	// ServerSide is received_at -> stored_at, both server clocks.
	ServerSide   Quantiles `json:"server_side"`
	Distribution []HistBin `json:"distribution"`
	// CatchUp is seconds from the last arrival to the last message stored:
	// how long the pipeline needed to drain the surge.
	CatchUp float64 `json:"catch_up"`
	// Duration is how long the audit took, in seconds.
	Duration float64 `json:"duration"`
	// LookupErrors counts look-up requests that failed (and were retried).
	LookupErrors int `json:"lookup_errors"`
	// Error says why the audit failed, when it did (an API that stopped
	// answering, one without the look-up endpoint): its figures are then
	// incomplete, and the run fails.
	Error string `json:"error,omitempty"`
	// LostSample and DuplicatedSample list a few Message-IDs to look at.
	LostSample       []string `json:"lost_sample,omitempty"`
	DuplicatedSample []string `json:"duplicated_sample,omitempty"`
}

// storedSummary is the part of Levee's message summary the audit reads.
type storedSummary struct {
	ID         string    `json:"id"`
	MessageID  string    `json:"message_id"`
	ReceivedAt time.Time `json:"received_at"`
	StoredAt   time.Time `json:"stored_at"`
}

// errLookupUnsupported: the API cannot answer look-ups at all.
var errLookupUnsupported = errors.New("loadtest: the API does not support the audit look-up")

// errAPIUnanswered: the API answered none of the audit's look-ups for
// Audit.Unanswered.
var errAPIUnanswered = errors.New("the API answered no look-up")

type lookupResponse struct {
	Found map[string][]storedSummary `json:"found"`
}

// lookup asks Levee for up to maxLookup Message-IDs.
func (r *run) lookup(ctx context.Context, ids []string) (map[string][]storedSummary, error) {
	body, err := json.Marshal(map[string][]string{"message_ids": ids})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.API+"/api/v1/messages/lookup", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("POST /api/v1/messages/lookup: %s: %s", resp.Status, bytes.TrimSpace(msg))
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
			// Asking again will not help: not Levee, or not this version.
			err = fmt.Errorf("%w: %w", errLookupUnsupported, err)
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusMisdirectedRequest:
			// Nor will it without the right token or host name.
			err = fmt.Errorf("%w: %w (the server's http.read_token goes in --api-token or $LEVEE_HTTP_READ_TOKEN; "+
				"a 421 wants the host in its http.allowed_hosts or --api by IP)", errLookupUnsupported, err)
		}
		return nil, err
	}
	var lr lookupResponse
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil {
		return nil, fmt.Errorf("POST /api/v1/messages/lookup: %w", err)
	}
	return lr.Found, nil
}

// lookupRound is what one lookupAll found, and what it could not ask.
type lookupRound struct {
	found map[string][]storedSummary
	// unanswered holds the ids of the batches that failed; errs counts
	// those batches, answered the others; lastErr is one of the failures.
	unanswered map[string]bool
	errs       int
	answered   int
	lastErr    error
	// fatal is set when retrying is pointless (errLookupUnsupported).
	fatal error
}

// lookupAll looks ids up in batches, Audit.Concurrency at a time. Failed
// batches are counted and their ids left out of the answer.
func (r *run) lookupAll(ctx context.Context, ids []string) lookupRound {
	out := lookupRound{found: map[string][]storedSummary{}, unanswered: map[string]bool{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.cfg.Audit.Concurrency)
	for batch := range slices.Chunk(ids, maxLookup) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			found, err := r.lookup(ctx, batch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.errs++
				out.lastErr = err
				for _, id := range batch {
					out.unanswered[id] = true
				}
				if errors.Is(err, errLookupUnsupported) {
					out.fatal = err
				}
				return
			}
			out.answered++
			for k, v := range found {
				out.found[k] = v
			}
		})
	}
	wg.Wait()
	return out
}

// audit polls until every accepted message is stored or ctx ends, then
// waits Settle and makes a final pass over every message sent, which
// catches duplicates stored after the first copy was seen and messages
// stored although the sender saw no 250.
func (r *run) audit(ctx context.Context) *AuditResult {
	began := time.Now()
	accepted, refused := r.auditedMessages()
	res := &AuditResult{Accepted: int64(len(accepted)), LateAfter: r.cfg.Audit.LateAfter.Seconds()}
	r.auditing.wanted.Store(res.Accepted)
	r.auditing.running.Store(true)
	defer r.auditing.running.Store(false)

	first, err := r.pollUntilStored(ctx, accepted, res)
	if err != nil {
		// What was not found could not be checked: not lost, unknown.
		unchecked := map[string]bool{}
		for _, a := range accepted {
			unchecked[a.mid] = true
		}
		r.tallyAccepted(res, accepted, first, lookupRound{unanswered: unchecked})
		res.Error = err.Error()
		res.Duration = time.Since(began).Seconds()
		r.auditing.found.Store(res.Stored)
		return res
	}
	final := r.finalPass(ctx, accepted, refused, res)
	r.tallyAccepted(res, accepted, first, final)
	if res.Unchecked > 0 {
		res.Complete = false
		res.Error = fmt.Sprintf("the final look-up of %d accepted messages failed: %v", res.Unchecked, final.lastErr)
	}
	again := final.found
	for _, mid := range refused {
		if len(again[mid]) > 0 {
			res.StoredDespiteRefusal++
		}
	}
	res.Duration = time.Since(began).Seconds()
	r.auditing.found.Store(res.Stored)
	return res
}

// acceptedMsg is a message answered 250, with the Message-ID the audit
// looks it up by.
type acceptedMsg struct {
	f   final
	mid string
}

// auditedMessages splits what was sent into the accepted messages, which
// must be stored, and the Message-IDs of the others, which the final pass
// checks for copies stored anyway.
// Both are sorted by sequence number, so that the samples of lost and
// duplicated messages are the first ones offered, whatever order the
// messages finished in.
func (r *run) auditedMessages() (accepted []acceptedMsg, refused []string) {
	r.stats.mu.Lock()
	finals := slices.Clone(r.stats.finals)
	r.stats.mu.Unlock()
	slices.SortFunc(finals, func(a, b final) int { return int(a.seq) - int(b.seq) })
	for _, f := range finals {
		mid := messageID(f.seq, r.runID)
		if f.state == stateAccepted {
			accepted = append(accepted, acceptedMsg{f, mid})
		} else {
			refused = append(refused, mid)
		}
	}
	return accepted, refused
}

// pollUntilStored looks the accepted messages up until each one is found or
// ctx ends, and returns the earliest copy of each found. A round asks for
// the pollWindow oldest pending messages; when it finds most of them the
// next round follows at once, otherwise after Audit.Poll. So the audit
// follows the drain with about one look-up per message stored, and goes
// through mail stored long ago at the API's speed. It sets res.Complete
// and counts failed look-ups in
// res.LookupErrors. It gives up with an error, and what it found so far,
// when the API cannot answer look-ups at all (errLookupUnsupported) or
// answered none for Audit.Unanswered (errAPIUnanswered): polling until the
// deadline would change nothing, and what it could not ask is not lost.
func (r *run) pollUntilStored(ctx context.Context, accepted []acceptedMsg, res *AuditResult) (map[string]storedSummary, error) {
	pending := make([]string, len(accepted))
	for i, a := range accepted {
		pending[i] = a.mid
	}
	first := map[string]storedSummary{}
	lastAnswer := time.Now()
	// lastNews is when a round last found one of the messages it asked
	// for, or asked for every pending one.
	everything, lastNews := false, time.Now()
	for len(pending) > 0 {
		ask := pending
		if !everything && len(ask) > pollWindow {
			ask = ask[:pollWindow]
		}
		round := r.lookupAll(ctx, ask)
		res.LookupErrors += round.errs
		if round.fatal != nil {
			return first, round.fatal
		}
		if round.answered > 0 {
			lastAnswer = time.Now()
		} else if ctx.Err() == nil && time.Since(lastAnswer) >= r.cfg.Audit.Unanswered {
			return first, fmt.Errorf("%w at %s for %s: %v", errAPIUnanswered, r.cfg.API, r.cfg.Audit.Unanswered, round.lastErr)
		}
		found := 0 // of ask, counted before pending (which ask shares) shrinks
		for _, mid := range ask {
			if len(round.found[mid]) > 0 {
				found++
			}
		}
		pending = slices.DeleteFunc(pending, func(mid string) bool {
			copies := round.found[mid]
			if len(copies) == 0 {
				return false
			}
			first[mid] = earliest(copies)
			return true
		})
		r.auditing.found.Store(int64(len(first)))
		if len(pending) == 0 || ctx.Err() != nil {
			break
		}
		if everything || found > 0 {
			everything, lastNews = false, time.Now()
		}
		if 2*found >= len(ask) {
			continue // the drain is past most of these: on to the next ones at once
		}
		// Nothing found among the oldest for a while: perhaps they are lost
		// and the rest is stored, so the next round asks for everything. One
		// empty round is not enough: a drain that paused for a poll or two
		// (a slow commit, a busy machine) is not losing mail, and asking for
		// every pending message then loads the API the readers are timed on.
		everything = found == 0 && round.errs == 0 && time.Since(lastNews) >= everythingEvery*r.cfg.Audit.Poll
		sleep(ctx, r.cfg.Audit.Poll)
	}
	res.Complete = len(pending) == 0
	return first, nil
}

// finalPass looks every message sent up once more, after waiting Settle
// when polling found everything, so that a duplicate stored after its first
// copy was seen is caught, and so is a refused message stored anyway. It
// runs on its own clock, because the audit's deadline bounds the wait for
// stragglers, not this check. Failed look-ups are counted in
// res.LookupErrors and their messages left out of the answer.
func (r *run) finalPass(ctx context.Context, accepted []acceptedMsg, refused []string, res *AuditResult) lookupRound {
	if res.Complete {
		sleep(ctx, r.cfg.Audit.Settle)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(30*time.Second, r.cfg.Audit.Settle))
	defer cancel()
	all := make([]string, 0, len(accepted)+len(refused))
	for _, a := range accepted {
		all = append(all, a.mid)
	}
	all = append(all, refused...)
	round := r.lookupAll(fctx, all)
	res.LookupErrors += round.errs
	return round
}

// tallyAccepted fills res's figures for the accepted messages from the
// copies the final pass found, falling back on what polling found (first)
// where the final pass failed for a message's batch, so that a failed
// request does not turn a stored message into a lost one. A message found
// by neither is lost only if the final pass asked for it and got an
// answer; otherwise it is unchecked.
func (r *run) tallyAccepted(res *AuditResult, accepted []acceptedMsg, first map[string]storedSummary, final lookupRound) {
	e2e, server := newHistogram(), newHistogram()
	var lastStored time.Time
	for _, a := range accepted {
		copies := final.found[a.mid]
		if f, ok := first[a.mid]; ok && len(copies) == 0 {
			copies = []storedSummary{f}
		}
		if len(copies) == 0 && final.unanswered[a.mid] {
			res.Unchecked++
			continue
		}
		if len(copies) == 0 {
			res.Lost++
			if len(res.LostSample) < 20 {
				res.LostSample = append(res.LostSample, a.mid)
			}
			continue
		}
		res.Stored++
		if len(copies) > 1 {
			res.Duplicated++
			res.ExtraCopies += int64(len(copies) - 1)
			if len(res.DuplicatedSample) < 20 {
				res.DuplicatedSample = append(res.DuplicatedSample, a.mid)
			}
		}
		f := earliest(copies)
		lat := f.StoredAt.Sub(a.f.acceptedAt)
		e2e.Record(lat)
		if !f.ReceivedAt.IsZero() {
			server.Record(f.StoredAt.Sub(f.ReceivedAt))
		}
		if lat > r.cfg.Audit.LateAfter {
			res.Late++
		}
		if f.StoredAt.After(lastStored) {
			lastStored = f.StoredAt
		}
	}
	res.EndToEnd = e2e.Summary()
	res.ServerSide = server.Summary()
	res.Distribution = e2e.Bins(40)
	if end := r.loadEnd.Load(); end != 0 && !lastStored.IsZero() {
		res.CatchUp = max(0, lastStored.Sub(time.Unix(0, end)).Seconds())
	}
	if res.Stored == res.Accepted && !lastStored.IsZero() {
		r.caughtUp.Store(lastStored.UnixNano())
	}
}

// sleep waits d, cut short when ctx ends: no pause of the audit may
// outlast its deadline.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func earliest(copies []storedSummary) storedSummary {
	f := copies[0]
	for _, c := range copies[1:] {
		if c.StoredAt.Before(f.StoredAt) {
			f = c
		}
	}
	return f
}
