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

// MaxLookup is how many Message-IDs one look-up request carries (Levee's
// limit for POST /api/v1/messages/lookup).
const MaxLookup = 1000

// AuditResult says whether every accepted message was stored exactly once.
type AuditResult struct {
	// Complete: every accepted message was found before the deadline.
	Complete bool `json:"complete"`
	// Accepted is the number of messages answered 250, all checked.
	Accepted int64 `json:"accepted"`
	// Stored is how many of them were found at least once.
	Stored int64 `json:"stored"`
	// Lost were answered 250 and not stored by the deadline.
	Lost int64 `json:"lost"`
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
	// Error says why the audit stopped early, when it did (an API without
	// the look-up endpoint, for one); its figures are then incomplete.
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

type lookupResponse struct {
	Found map[string][]storedSummary `json:"found"`
}

// lookup asks Levee for up to MaxLookup Message-IDs.
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
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusBadRequest {
			// Asking again will not help: not Levee, or not this version.
			err = fmt.Errorf("%w: %w", errLookupUnsupported, err)
		}
		return nil, err
	}
	var lr lookupResponse
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil {
		return nil, fmt.Errorf("POST /api/v1/messages/lookup: %w", err)
	}
	return lr.Found, nil
}

// lookupAll looks ids up in batches, Audit.Concurrency at a time. Failed
// batches are counted and left out of the answer; the last error that makes
// retrying pointless is returned.
func (r *run) lookupAll(ctx context.Context, ids []string) (map[string][]storedSummary, int, error) {
	out := map[string][]storedSummary{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.cfg.Audit.Concurrency)
	errs := 0
	var fatal error
	for batch := range slices.Chunk(ids, MaxLookup) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			found, err := r.lookup(ctx, batch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				if errors.Is(err, errLookupUnsupported) {
					fatal = err
				}
				return
			}
			for k, v := range found {
				out[k] = v
			}
		})
	}
	wg.Wait()
	return out, errs, fatal
}

// audit polls until every accepted message is stored or ctx ends, then
// waits Settle and makes a final pass over every message sent, which
// catches duplicates stored after the first copy was seen and messages
// stored although the sender saw no 250.
func (r *run) audit(ctx context.Context) *AuditResult {
	began := time.Now()
	r.stats.mu.Lock()
	finals := slices.Clone(r.stats.finals)
	r.stats.mu.Unlock()
	slices.SortFunc(finals, func(a, b final) int { return int(a.seq) - int(b.seq) })

	res := &AuditResult{LateAfter: r.cfg.Audit.LateAfter.Seconds()}
	type acceptedMsg struct {
		f   final
		mid string
	}
	var accepted []acceptedMsg
	var refused []string
	for _, f := range finals {
		mid := messageID(f.seq, r.runID)
		if f.state == stateAccepted {
			accepted = append(accepted, acceptedMsg{f, mid})
		} else {
			refused = append(refused, mid)
		}
	}
	res.Accepted = int64(len(accepted))
	r.auditing.wanted.Store(res.Accepted)
	r.auditing.running.Store(true)
	defer r.auditing.running.Store(false)

	first := map[string]storedSummary{} // earliest copy of each found message
	pending := make([]string, len(accepted))
	for i, a := range accepted {
		pending[i] = a.mid
	}
	for len(pending) > 0 {
		found, errs, fatal := r.lookupAll(ctx, pending)
		res.LookupErrors += errs
		if fatal != nil {
			res.Error = fatal.Error()
			res.Lost = int64(len(accepted)) // unknown: nothing could be checked
			res.Duration = time.Since(began).Seconds()
			return res
		}
		pending = slices.DeleteFunc(pending, func(mid string) bool {
			copies := found[mid]
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
		t := time.NewTimer(r.cfg.Audit.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	res.Complete = len(pending) == 0

	// Final pass, on its own clock: the deadline bounds the wait for
	// stragglers, not this check.
	if res.Complete {
		t := time.NewTimer(r.cfg.Audit.Settle)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(30*time.Second, r.cfg.Audit.Settle))
	defer cancel()
	all := make([]string, 0, len(accepted)+len(refused))
	for _, a := range accepted {
		all = append(all, a.mid)
	}
	all = append(all, refused...)
	again, errs, _ := r.lookupAll(fctx, all)
	res.LookupErrors += errs

	e2e, server := NewHistogram(), NewHistogram()
	var lastStored time.Time
	for _, a := range accepted {
		copies := again[a.mid]
		if f, ok := first[a.mid]; ok && len(copies) == 0 {
			copies = []storedSummary{f} // the final pass failed for its batch
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
	for _, mid := range refused {
		if len(again[mid]) > 0 {
			res.StoredDespiteRefusal++
		}
	}
	res.EndToEnd = e2e.Summary()
	res.ServerSide = server.Summary()
	res.Distribution = e2e.Bins(40)
	if end := r.loadEnd.Load(); end != 0 && !lastStored.IsZero() {
		res.CatchUp = max(0, lastStored.Sub(time.Unix(0, end)).Seconds())
	}
	res.Duration = time.Since(began).Seconds()
	r.auditing.found.Store(res.Stored)
	return res
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
