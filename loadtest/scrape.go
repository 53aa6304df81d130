package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// QueuePoint is one reading of Levee's queue and workers.
type QueuePoint struct {
	// T is seconds from the start of the run.
	T          float64 `json:"t"`
	Messages   uint64  `json:"messages"`
	Bytes      uint64  `json:"bytes"`
	Fill       float64 `json:"fill"`
	Pending    uint64  `json:"pending"`
	AckPending int     `json:"ack_pending"`
	// Workers is levee_worker_concurrency from /metrics, absent when the
	// API process runs no workers.
	Workers *float64 `json:"workers,omitempty"`
	// Duty is levee_worker_autoscale_duty: the share of time each loop
	// works (below 1 they rest for the readers or the store; 1 while they
	// catch up), absent likewise.
	Duty *float64 `json:"duty,omitempty"`
	// SMTPSessions is levee_smtp_active_sessions, likewise.
	SMTPSessions *float64 `json:"smtp_sessions,omitempty"`
	// CPUSeconds and RSSBytes are the API process's own
	// process_cpu_seconds_total and process_resident_memory_bytes: what
	// the run cost the server (all of it when one process has every role).
	CPUSeconds *float64 `json:"cpu_seconds,omitempty"`
	RSSBytes   *float64 `json:"rss_bytes,omitempty"`
}

// scraper reads GET /api/v1/queue and GET /metrics every ScrapeEvery.
type scraper struct {
	r      *run
	mu     sync.Mutex
	points []QueuePoint
	errors int
}

func newScraper(r *run) *scraper { return &scraper{r: r} }

func (s *scraper) loop(ctx context.Context) {
	t := time.NewTicker(s.r.cfg.ScrapeEvery)
	defer t.Stop()
	for {
		s.scrape(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// queueStatus is the part of Levee's /api/v1/queue the report uses.
type queueStatus struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	Fill     struct {
		Max float64 `json:"max"`
	} `json:"fill"`
	Consumer struct {
		NumPending    uint64 `json:"num_pending"`
		NumAckPending int    `json:"num_ack_pending"`
	} `json:"consumer"`
}

func (s *scraper) scrape(ctx context.Context) {
	now := time.Now()
	var st queueStatus
	err := getJSON(ctx, s.r.http, s.r.cfg.API+"/api/v1/queue", &st)
	if err != nil {
		s.mu.Lock()
		s.errors++
		s.mu.Unlock()
		return
	}
	p := QueuePoint{T: now.Sub(s.r.start).Seconds(), Messages: st.Messages, Bytes: st.Bytes, Fill: st.Fill.Max,
		Pending: st.Consumer.NumPending, AckPending: st.Consumer.NumAckPending}
	if m, err := scrapeMetrics(ctx, s.r.http, s.r.cfg.API+"/metrics", "levee_worker_concurrency", "levee_worker_autoscale_duty",
		"levee_smtp_active_sessions", "process_cpu_seconds_total", "process_resident_memory_bytes"); err == nil {
		p.Workers = present(m, "levee_worker_concurrency")
		p.Duty = present(m, "levee_worker_autoscale_duty")
		p.SMTPSessions = present(m, "levee_smtp_active_sessions")
		p.CPUSeconds = present(m, "process_cpu_seconds_total")
		p.RSSBytes = present(m, "process_resident_memory_bytes")
	}
	if ctx.Err() != nil {
		// The run ended between the two reads: the point is torn (a queue
		// without its metrics), and keeping it would make the server's CPU
		// time look as if it ended a scrape early.
		return
	}
	s.mu.Lock()
	s.points = append(s.points, p)
	s.mu.Unlock()
}

// present is m[name] when the page had it, nil otherwise.
func present(m map[string]float64, name string) *float64 {
	if v, ok := m[name]; ok {
		return &v
	}
	return nil
}

func (s *scraper) latest() (QueuePoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.points) == 0 {
		return QueuePoint{}, false
	}
	return s.points[len(s.points)-1], true
}

func (s *scraper) all() ([]QueuePoint, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]QueuePoint(nil), s.points...), s.errors
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// scrapeMetrics reads the named metrics from a Prometheus text exposition,
// summing over label sets. A few names from one small page need no more
// than a line scan.
func scrapeMetrics(ctx context.Context, c *http.Client, url string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body, names...)
}

func parseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		for _, n := range names {
			rest, ok := strings.CutPrefix(line, n)
			if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
				continue
			}
			if rest[0] == '{' {
				end := strings.LastIndexByte(rest, '}')
				if end < 0 {
					continue
				}
				rest = rest[end+1:]
			}
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				continue
			}
			v, err := strconv.ParseFloat(fields[0], 64)
			if err != nil {
				continue
			}
			out[n] += v
		}
	}
	return out, sc.Err()
}
