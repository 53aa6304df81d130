package opsclient

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
	"github.com/levee-mail/levee/queue/admin"
	"github.com/levee-mail/levee/web/opsdoc"
)

// Client is a running Levee's operator tools; Close releases the
// connection.
type Client interface {
	admin.Operator
	Close()
}

// natsOps is the Admin on a connection of its own. Its Status has rates
// when an earlier status was taken (the watch loop), or after waiting
// rateWindow for a second one.
type natsOps struct {
	*admin.Admin
	nc         *nats.Conn
	rateWindow time.Duration
	prev       admin.Status
}

// NATS reaches the queue straight through JetStream at url, with the
// server's credentials and TLS settings (queue.Security), under Levee's
// default names (stream, consumer, dead stream), which no option renames.
// It knows no Levee config, so its Limits report no drift. Status waits
// rateWindow for a second sample the first time, to give rates (0: none).
// A server older than queue.MinServerVersion is refused, as Levee does.
func NATS(url string, sec queue.Security, rateWindow time.Duration) (Client, error) {
	nc, err := queue.Dial(url, sec, nats.Name("levee-cli"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	cfg := queue.DefaultConfig()
	cfg.URL, cfg.Security = url, sec
	a, err := admin.New(nc, admin.Config{Queue: cfg})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsOps{Admin: a, nc: nc, rateWindow: rateWindow}, nil
}

func (o *natsOps) Status(ctx context.Context) (admin.Status, error) {
	if o.prev.At.IsZero() && o.rateWindow > 0 {
		first, err := o.Admin.Status(ctx)
		if err != nil {
			return admin.Status{}, err
		}
		o.prev = first
		select {
		case <-time.After(o.rateWindow):
		case <-ctx.Done():
			return admin.Status{}, ctx.Err()
		}
	}
	st, err := o.Admin.Status(ctx)
	if err != nil {
		return admin.Status{}, err
	}
	st.Rates = admin.RatesBetween(o.prev, st)
	o.prev = st
	return st, nil
}

func (o *natsOps) Close() { o.nc.Close() }

// httpOps speaks the ops API of package web.
type httpOps struct {
	base  string
	token string
	c     *http.Client
}

// HTTP reaches the ops API of the Levee whose HTTP address is server
// (http://127.0.0.1:8025); token is its http.admin_token, which changes
// need.
func HTTP(server, token string) (Client, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server: want an http:// or https:// URL of a Levee HTTP address, got %q", server)
	}
	return &httpOps{base: strings.TrimRight(server, "/"), token: token, c: &http.Client{}}, nil
}

func (o *httpOps) Close() { o.c.CloseIdleConnections() }

// APIError is an error answer of the ops API. It unwraps to the admin
// sentinel its reason names (admin.ErrorFor), so errors.Is tells a refused
// change from a missing dead letter as it does in process.
type APIError struct {
	Status int    // the HTTP status
	Msg    string // the server's message
	Reason string // admin.Reason's name, "" for none
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Status) }

func (e *APIError) Unwrap() error { return admin.ErrorFor(e.Reason) }

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
			Error  string `json:"error"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Status: resp.StatusCode, Msg: e.Error, Reason: e.Reason}
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

func (o *httpOps) Status(ctx context.Context) (admin.Status, error) {
	var st opsdoc.Status
	err := o.do(ctx, http.MethodGet, "/api/v1/queue", nil, &st)
	return st.Admin(), err
}

func (o *httpOps) Limits(ctx context.Context) (admin.LimitsReport, error) {
	var l opsdoc.LimitsReport
	err := o.do(ctx, http.MethodGet, "/api/v1/queue/limits", nil, &l)
	return l.Admin(), err
}

func (o *httpOps) UpdateLimits(ctx context.Context, l admin.LimitsChange) (admin.LimitsUpdate, error) {
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
	var u opsdoc.LimitsUpdate
	err := o.do(ctx, http.MethodPut, "/api/v1/queue/limits", body, &u)
	return u.Admin(), err
}

func (o *httpOps) DeadLetters(ctx context.Context, after uint64, limit int) ([]admin.DeadLetterInfo, uint64, error) {
	var out struct {
		DeadLetters []admin.DeadLetterInfo `json:"dead_letters"`
		Total       uint64                 `json:"total"`
	}
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(limit)}}
	err := o.do(ctx, http.MethodGet, "/api/v1/dlq?"+q.Encode(), nil, &out)
	return out.DeadLetters, out.Total, err
}

func (o *httpOps) DeadLetter(ctx context.Context, seq uint64) (admin.DeadLetterInfo, []byte, error) {
	var d admin.DeadLetterInfo
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
