package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/levee-mail/levee/queue"
)

// opsClient is what `levee queue` and `levee dlq` need from a running
// Levee: its HTTP ops API (--server) or JetStream itself (--nats-url), so
// that the commands work in every deployment.
type opsClient interface {
	queue.Operator
	Close()
}

// natsOps is the Admin on a connection of its own. Its Status has rates
// when an earlier status was taken (the watch loop), or after waiting
// rateWindow for a second one.
type natsOps struct {
	*queue.Admin
	nc         *nats.Conn
	rateWindow time.Duration
	prev       queue.Status
}

// dialNATS reaches the queue under Levee's default names (stream, consumer,
// dead stream), which no option renames.
func dialNATS(url string, rateWindow time.Duration) (*natsOps, error) {
	nc, err := nats.Connect(url, nats.Name("levee-cli"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	a, err := queue.NewAdmin(nc, queue.DefaultConfig(), nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsOps{Admin: a, nc: nc, rateWindow: rateWindow}, nil
}

func (o *natsOps) Status(ctx context.Context) (queue.Status, error) {
	if o.prev.At.IsZero() && o.rateWindow > 0 {
		first, err := o.Admin.Status(ctx)
		if err != nil {
			return queue.Status{}, err
		}
		o.prev = first
		select {
		case <-time.After(o.rateWindow):
		case <-ctx.Done():
			return queue.Status{}, ctx.Err()
		}
	}
	st, err := o.Admin.Status(ctx)
	if err != nil {
		return queue.Status{}, err
	}
	st.Rates = queue.RatesBetween(o.prev, st)
	o.prev = st
	return st, nil
}

func (o *natsOps) Close() { o.nc.Close() }

// httpOps speaks the ops API of web/ops.go.
type httpOps struct {
	base  string
	token string
	c     *http.Client
}

func newHTTPOps(server, token string) (*httpOps, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server: want an http:// or https:// URL of a Levee HTTP address, got %q", server)
	}
	return &httpOps{base: strings.TrimRight(server, "/"), token: token, c: &http.Client{}}, nil
}

func (o *httpOps) Close() { o.c.CloseIdleConnections() }

// apiError is an error answer of the ops API; errors.Is matches the queue
// sentinel its 400, 404 or 409 stands for (409: a change refused for what
// it would do, or because another is in progress).
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.status) }

func (e *apiError) Is(target error) bool {
	switch e.status {
	case http.StatusBadRequest:
		return target == queue.ErrInvalidLimit
	case http.StatusConflict:
		return target == queue.ErrWouldDelete || target == queue.ErrWouldBounce || target == queue.ErrBusy
	case http.StatusNotFound:
		return target == queue.ErrNotFound
	}
	return false
}

// do sends a request and decodes a JSON answer into out (or returns the body
// raw when out is a *[]byte).
func (o *httpOps) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, o.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	resp, err := o.c.Do(req)
	if err != nil {
		return fmt.Errorf("levee at %s: %w", o.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("levee at %s: %w", o.base, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &apiError{status: resp.StatusCode, msg: e.Error}
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("levee at %s: %s %s: unexpected answer: %w", o.base, method, path, err)
	}
	return nil
}

func (o *httpOps) Status(ctx context.Context) (queue.Status, error) {
	var st queue.Status
	return st, o.do(ctx, http.MethodGet, "/api/v1/queue", nil, &st)
}

func (o *httpOps) Limits(ctx context.Context) (queue.StreamLimits, error) {
	var l queue.StreamLimits
	return l, o.do(ctx, http.MethodGet, "/api/v1/queue/limits", nil, &l)
}

func (o *httpOps) UpdateLimits(ctx context.Context, l queue.Limits) (queue.LimitsUpdate, error) {
	body := map[string]any{}
	if l.MaxMsgs != 0 {
		body["max_msgs"] = l.MaxMsgs
	}
	if l.MaxBytes != 0 {
		body["max_bytes"] = l.MaxBytes
	}
	if l.MaxAge != 0 {
		body["max_age"] = l.MaxAge.String()
	}
	if l.MaxMsgSize != 0 {
		body["max_msg_size"] = l.MaxMsgSize
	}
	switch {
	case l.PerDomainMaxMsgs < 0:
		body["per_domain_max_msgs"] = 0 // the API's "no cap"
	case l.PerDomainMaxMsgs > 0:
		body["per_domain_max_msgs"] = l.PerDomainMaxMsgs
	}
	if l.Force {
		body["force"] = true
	}
	var u queue.LimitsUpdate
	return u, o.do(ctx, http.MethodPut, "/api/v1/queue/limits", body, &u)
}

func (o *httpOps) DeadLetters(ctx context.Context, after uint64, limit int) ([]queue.DeadLetterInfo, uint64, error) {
	var out struct {
		DeadLetters []queue.DeadLetterInfo `json:"dead_letters"`
		Total       uint64                 `json:"total"`
	}
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(limit)}}
	err := o.do(ctx, http.MethodGet, "/api/v1/dlq?"+q.Encode(), nil, &out)
	return out.DeadLetters, out.Total, err
}

func (o *httpOps) DeadLetter(ctx context.Context, seq uint64) (queue.DeadLetterInfo, []byte, error) {
	var d queue.DeadLetterInfo
	p := "/api/v1/dlq/" + strconv.FormatUint(seq, 10)
	if err := o.do(ctx, http.MethodGet, p, nil, &d); err != nil {
		return d, nil, err
	}
	var raw []byte
	return d, raw, o.do(ctx, http.MethodGet, p+"/raw", nil, &raw)
}

func (o *httpOps) Replay(ctx context.Context, seq uint64) error {
	var out map[string]int
	return o.do(ctx, http.MethodPost, "/api/v1/dlq/"+strconv.FormatUint(seq, 10)+"/replay", nil, &out)
}

func (o *httpOps) ReplayAll(ctx context.Context) (int, error) {
	var out struct {
		Replayed int `json:"replayed"`
	}
	err := o.do(ctx, http.MethodPost, "/api/v1/dlq/replay", nil, &out)
	return out.Replayed, err
}

func (o *httpOps) Purge(ctx context.Context, seq uint64) error {
	var out map[string]int
	return o.do(ctx, http.MethodDelete, "/api/v1/dlq/"+strconv.FormatUint(seq, 10), nil, &out)
}

func (o *httpOps) PurgeAll(ctx context.Context) (uint64, error) {
	var out struct {
		Purged uint64 `json:"purged"`
	}
	err := o.do(ctx, http.MethodDelete, "/api/v1/dlq", nil, &out)
	return out.Purged, err
}
