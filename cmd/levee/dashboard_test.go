package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/queue"
)

// The dashboard tests load the page at / of a real in-process Levee in
// headless Chromium (Debian's chromium package) and read back what it
// rendered: `chromium --dump-dom` after a virtual-time budget in which the
// page polls a few times, and `--screenshot` for the picture. No DevTools
// client, no npm: the page marks every figure with data-field (the JSON path
// in /api/v1/queue), data-value (the raw number) and its text.
//
// "Matches /api/v1/queue" is checked against the very response the page
// rendered: Chromium talks to Levee through a recording proxy, and the page
// names the status it shows by its "at". With the workers paused the
// figures also equal a fresh GET after the page was read.

// chromiumRequiredEnv makes a missing browser a failure (CI) instead of a skip.
const chromiumRequiredEnv = "LEVEE_TEST_CHROMIUM_REQUIRED"

// dashboardScreenshotEnv names a file to keep the test's screenshot in
// (docs/dashboard.png is made this way).
const dashboardScreenshotEnv = "LEVEE_DASHBOARD_SCREENSHOT"

type chromium struct{ path string }

func needChromium(t *testing.T) chromium {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return chromium{path: p}
		}
	}
	if os.Getenv(chromiumRequiredEnv) == "1" {
		t.Fatalf("chromium is not installed and %s=1 (apt-get install -y chromium)", chromiumRequiredEnv)
	}
	t.Skipf("chromium not installed (apt-get install -y chromium); set %s=1 to fail instead", chromiumRequiredEnv)
	return chromium{}
}

// run starts a headless Chromium with its own profile. Virtual time lets the
// page's 2 s polls run in well under a second of real time; the browser
// waits for pending fetches before advancing it.
func (c chromium) run(t *testing.T, budget time.Duration, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-extensions", "--disable-sync",
		"--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
		"--lang=en-US", "--force-device-scale-factor=1", "--window-size=1280,900",
		"--user-data-dir=" + t.TempDir(),
		fmt.Sprintf("--virtual-time-budget=%d", budget.Milliseconds()),
	}
	cmd := exec.CommandContext(ctx, c.path, append(base, args...)...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	// Chromium forks a zygote and renderers: on a timeout, kill them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return stdout.Bytes()
}

func (c chromium) dumpDOM(t *testing.T, pageURL string) string {
	t.Helper()
	return string(c.run(t, 5*time.Second, "--dump-dom", pageURL))
}

func (c chromium) screenshot(t *testing.T, pageURL string) []byte {
	t.Helper()
	file := t.TempDir() + "/dashboard.png"
	c.run(t, 5*time.Second, "--screenshot="+file, pageURL)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return b
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// statusRecorder is a reverse proxy to Levee that keeps every
// /api/v1/queue body it passes on, by the status's "at".
type statusRecorder struct {
	url string
	mu  sync.Mutex
	by  map[string][]byte
}

func newStatusRecorder(t *testing.T, target string) *statusRecorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &statusRecorder{by: map[string][]byte{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/api/v1/queue" || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var st struct{ At string }
		if err := json.Unmarshal(body, &st); err != nil {
			return err
		}
		rec.mu.Lock()
		rec.by[st.At] = body
		rec.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	rec.url = srv.URL
	return rec
}

// status returns the recorded response that carried at, decoded as JSON
// (numbers as json.Number, so that uint64 counters stay exact).
func (r *statusRecorder) status(t *testing.T, at string) map[string]any {
	t.Helper()
	r.mu.Lock()
	body, ok := r.by[at]
	n := len(r.by)
	r.mu.Unlock()
	if !ok {
		t.Fatalf("the page shows the status at %q, which none of the %d /api/v1/queue responses it got carried", at, n)
	}
	return decodeJSON(t, body)
}

func decodeJSON(t *testing.T, body []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return m
}

func getBody(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode, b
}

func queueStatus(l *apptest.Levee) map[string]any {
	l.T.Helper()
	code, body := getBody(l.T, l.HTTPURL+"/api/v1/queue")
	if code != http.StatusOK {
		l.T.Fatalf("GET /api/v1/queue: %d %s", code, body)
	}
	return decodeJSON(l.T, body)
}

// lookup walks a dotted path ("consumer.num_pending") through decoded JSON.
func lookup(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return v, v != nil
}

func number(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

// The page's formatting rules (dashboard.js), restated: the test checks the
// text a person reads, not only the raw value.
func fixed(x float64, places int) string {
	p := math.Pow(10, float64(places))
	return strconv.FormatFloat(math.Round(x*p)/p, 'f', places, 64)
}

func fmtCount(n float64) string {
	s := strconv.FormatFloat(math.Round(n), 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	if n < 1024 {
		return fmtCount(n) + " B"
	}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fixed(n, 1) + " " + units[i]
}

func fmtPercent(r float64) string {
	if p := r * 100; p < 1 {
		return fixed(p, 2) + "%"
	}
	return fixed(r*100, 1) + "%"
}

func fmtRate(r float64) string { return fixed(r, 1) + "/s" }

func fmtDuration(ns float64) string {
	s := ns / 1e9
	parts := func(major float64, mu string, minor float64, nu string) string {
		out := strconv.Itoa(int(major)) + mu
		if minor != 0 {
			out += " " + strconv.Itoa(int(minor)) + nu
		}
		return out
	}
	switch {
	case s < 60:
		return fixed(s, 1) + "s"
	case s < 3600:
		return parts(math.Floor(s/60), "m", math.Floor(math.Mod(s, 60)), "s")
	case s < 86400:
		return parts(math.Floor(s/3600), "h", math.Floor(math.Mod(s, 3600)/60), "m")
	}
	return parts(math.Floor(s/86400), "d", math.Floor(math.Mod(s, 86400)/3600), "h")
}

func fmtSeconds(s float64) string { return fmtDuration(s * 1e9) }

func unlimited(f func(float64) string) func(float64) string {
	return func(n float64) string {
		if n <= 0 {
			return "unlimited"
		}
		return f(n)
	}
}

// dashboardFields is every figure the page must show, with its format;
// nil marks a string.
var dashboardFields = map[string]func(float64) string{
	"stream":                     nil,
	"dead_stream":                nil,
	"messages":                   fmtCount,
	"bytes":                      fmtBytes,
	"oldest_message_age_seconds": fmtSeconds,
	"fill.max":                   fmtPercent,
	"fill.messages":              fmtPercent,
	"fill.bytes":                 fmtPercent,
	"rates.ingest_per_second":    fmtRate,
	"rates.drain_per_second":     fmtRate,
	"rates.deferrals_per_second": fmtRate,
	"rates.window_seconds":       fmtSeconds,
	"workers.concurrency":        fmtCount,
	"workers.processes":          fmtCount,
	"smtp.processes":             fmtCount,
	"smtp.accepted_total":        fmtCount,
	"smtp.deferred_total":        fmtCount,
	"smtp.rejected_total":        fmtCount,
	"dead_letters":               fmtCount,
	"consumer.name":              nil,
	"consumer.num_pending":       fmtCount,
	"consumer.num_ack_pending":   fmtCount,
	"consumer.num_redelivered":   fmtCount,
	"consumer.num_waiting":       fmtCount,
	"limits.max_msgs":            unlimited(fmtCount),
	"limits.max_bytes":           unlimited(fmtBytes),
	"limits.max_age_seconds":     unlimited(fmtSeconds),
	"limits.per_domain_max_msgs": unlimited(fmtCount),
	"limits.max_msg_size":        unlimited(fmtBytes),
	"limits.discard":             nil,
	"limits.replicas":            fmtCount,
}

// coreFields are served by every Levee with a queue: the page must never
// show them as missing. The others (rates, workers, smtp) depend on the
// processes that report them.
var coreFields = []string{"stream", "messages", "bytes", "oldest_message_age_seconds", "fill.max", "fill.messages",
	"fill.bytes", "dead_letters", "consumer.num_pending", "consumer.num_ack_pending", "limits.max_msgs",
	"limits.max_bytes", "limits.max_age_seconds", "limits.per_domain_max_msgs"}

// renderedPage is what the dump of the DOM holds.
type renderedPage struct {
	body    map[string]string
	fields  map[string][]renderedField
	charts  map[string]*renderedChart
	domains []renderedDomain
	// partitions are the partitions panel's rows, in the same shape.
	partitions []renderedDomain
	errors     string
	dom        string
}

type renderedField struct {
	text    string
	value   string
	hasVal  bool
	missing bool
}

type renderedChart struct {
	points int
	series map[string]bool // data-series drawn
}

type renderedDomain struct {
	domain, text, value string
}

var (
	tagRE  = regexp.MustCompile(`<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^\s=>]+(?:="[^"]*")?)*)\s*/?>([^<]*)`)
	attrRE = regexp.MustCompile(`([^\s=]+)(?:="([^"]*)")?`)
)

// parseDashboard reads Chromium's serialization of the DOM: attributes in
// double quotes, text escaped. Figures are leaf elements, so the text after
// a start tag is the element's text.
func parseDashboard(t *testing.T, dom string) *renderedPage {
	t.Helper()
	p := &renderedPage{fields: map[string][]renderedField{}, charts: map[string]*renderedChart{}, dom: dom}
	var chart *renderedChart
	var domain *renderedDomain // the row whose count comes next
	inErrors := false
	for _, m := range tagRE.FindAllStringSubmatch(dom, -1) {
		closing, name, text := m[1] == "/", strings.ToLower(m[2]), html.UnescapeString(m[4])
		if closing {
			if name == "svg" {
				chart = nil
			}
			if name == "pre" {
				inErrors = false
			}
			continue
		}
		attrs := map[string]string{}
		for _, a := range attrRE.FindAllStringSubmatch(m[3], -1) {
			attrs[a[1]] = html.UnescapeString(a[2])
		}
		_, hasValue := attrs["data-value"]
		_, missing := attrs["data-missing"]
		switch {
		case name == "body":
			p.body = attrs
		case name == "pre" && attrs["id"] == "errors":
			_, hidden := attrs["hidden"]
			inErrors = !hidden
			if inErrors {
				p.errors = text
			}
		case name == "svg" && attrs["data-chart"] != "":
			points, _ := strconv.Atoi(attrs["data-points"])
			chart = &renderedChart{points: points, series: map[string]bool{}}
			p.charts[attrs["data-chart"]] = chart
		case chart != nil && attrs["data-series"] != "":
			chart.series[attrs["data-series"]] = true
		case name == "tr" && attrs["data-domain"] != "":
			p.domains = append(p.domains, renderedDomain{domain: attrs["data-domain"]})
			domain = &p.domains[len(p.domains)-1]
		case name == "tr" && attrs["data-partition"] != "":
			p.partitions = append(p.partitions, renderedDomain{domain: attrs["data-partition"]})
			domain = &p.partitions[len(p.partitions)-1]
		case name == "td" && domain != nil && hasValue:
			domain.text, domain.value = text, attrs["data-value"]
			domain = nil
		}
		if f := attrs["data-field"]; f != "" {
			p.fields[f] = append(p.fields[f], renderedField{text: text, value: attrs["data-value"], hasVal: hasValue, missing: missing})
		}
		if inErrors && name != "pre" {
			p.errors += text
		}
	}
	if p.body == nil {
		t.Fatalf("no <body> in Chromium's DOM dump:\n%s", dom)
	}
	return p
}

// checkHealthy fails on a page that did not load, poll or stay quiet.
func (p *renderedPage) checkHealthy(t *testing.T) {
	t.Helper()
	if p.errors != "" || p.body["data-errors"] != "" {
		t.Errorf("the page reports problems (script errors or CSP violations):\n%s", p.errors)
	}
	if st := p.body["data-state"]; st != "live" {
		t.Fatalf("page state %q, want live; DOM:\n%s", st, p.dom)
	}
	if polls, _ := strconv.Atoi(p.body["data-polls"]); polls < 2 {
		t.Errorf("the page rendered %d statuses in its 5 s of virtual time, want it to keep polling (>= 2)", polls)
	}
}

// checkFigures compares every figure on the page with the status it says it
// rendered, raw value and formatted text.
func (p *renderedPage) checkFigures(t *testing.T, st map[string]any) {
	t.Helper()
	window, _ := lookup(st, "rates.window_seconds")
	w, _ := number(window)
	for path, format := range dashboardFields {
		els := p.fields[path]
		if len(els) == 0 {
			t.Errorf("the page has no element for %s", path)
			continue
		}
		v, ok := lookup(st, path)
		if strings.HasPrefix(path, "rates.") && w <= 0 {
			ok = false // rates over no window are unknown, not zero
		}
		for _, el := range els {
			if !ok {
				if !el.missing || el.hasVal || el.text != "—" {
					t.Errorf("%s: the status has no value, the page shows %q (value %q)", path, el.text, el.value)
				}
				continue
			}
			if el.missing || !el.hasVal {
				t.Errorf("%s = %v in the status, the page shows it as missing (%q)", path, v, el.text)
				continue
			}
			if format == nil {
				s, _ := v.(string)
				if el.value != s || el.text != s {
					t.Errorf("%s = %q in the status, the page shows %q (value %q)", path, s, el.text, el.value)
				}
				continue
			}
			want, isNum := number(v)
			got, err := strconv.ParseFloat(el.value, 64)
			if !isNum || err != nil || got != want {
				t.Errorf("%s = %v in the status, the page's data-value is %q", path, v, el.value)
			}
			if el.text != format(want) {
				t.Errorf("%s = %v in the status: the page shows %q, want %q", path, v, el.text, format(want))
			}
		}
	}
	for _, path := range coreFields {
		if v, ok := lookup(st, path); !ok {
			t.Errorf("/api/v1/queue has no %s (%v)", path, v)
		}
	}

	list, _ := st["top_domains"].([]any)
	if len(list) != len(p.domains) {
		t.Errorf("top domains: status has %d, the page shows %d", len(list), len(p.domains))
	}
	for i, d := range list {
		if i >= len(p.domains) {
			break
		}
		obj, _ := d.(map[string]any)
		name, _ := obj["domain"].(string)
		n, _ := number(obj["messages"])
		got := p.domains[i]
		if got.domain != name || got.value != strconv.FormatFloat(n, 'f', -1, 64) || got.text != fmtCount(n) {
			t.Errorf("top domain %d: status %s with %v, the page shows %+v", i, name, n, got)
		}
	}
}

// checkStable compares the figures that cannot move while the workers are
// paused and no mail arrives with a status fetched after the page was read.
func (p *renderedPage) checkStable(t *testing.T, now map[string]any) {
	t.Helper()
	for _, path := range []string{"messages", "bytes", "fill.max", "fill.messages", "fill.bytes", "dead_letters",
		"consumer.num_pending", "consumer.num_ack_pending", "limits.max_msgs", "limits.max_bytes", "limits.max_age_seconds"} {
		v, _ := lookup(now, path)
		want, _ := number(v)
		for _, el := range p.fields[path] {
			if got, err := strconv.ParseFloat(el.value, 64); err != nil || got != want {
				t.Errorf("%s: the page shows %q, GET /api/v1/queue now says %v", path, el.value, v)
			}
		}
	}
}

// checkCharts: each chart drew its series. With the history endpoint the
// page starts from the server's samples (all of them: its first point is the
// server's first sample); without it, from its own polls.
func (p *renderedPage) checkCharts(t *testing.T, l *apptest.Levee, st map[string]any, historySamples int) {
	t.Helper()
	if historySamples < 0 {
		if got := p.body["data-history"]; got != "polls" {
			t.Errorf("no history endpoint, yet the page says its charts come from %q", got)
		}
	} else {
		code, body := getBody(t, l.HTTPURL+"/api/v1/queue/history")
		var h struct {
			Samples []struct{ At string } `json:"samples"`
		}
		if err := json.Unmarshal(body, &h); code != http.StatusOK || err != nil || len(h.Samples) == 0 {
			t.Fatalf("GET /api/v1/queue/history: %d %v %s", code, err, body)
		}
		if got := p.body["data-history"]; got != "server" {
			t.Errorf("the server keeps a history, the page's charts come from %q", got)
		}
		if got := p.body["data-first-sample"]; got != h.Samples[0].At {
			t.Errorf("the charts start at %q, the server's history at %q: the page did not load it", got, h.Samples[0].At)
		}
	}
	want := map[string]string{"depth": "messages", "fill": "fill", "rates": "ingest_per_second", "workers": "worker_concurrency"}
	for chart, series := range want {
		c := p.charts[chart]
		if c == nil {
			t.Errorf("no %s chart on the page", chart)
			continue
		}
		switch chart {
		case "rates":
			w, _ := lookup(st, "rates.window_seconds")
			if f, _ := number(w); f <= 0 && historySamples < 0 {
				continue // no rates yet and no history: "no data yet" is right
			}
		case "workers":
			if _, ok := lookup(st, "workers.concurrency"); !ok {
				continue
			}
		}
		min := 1
		if historySamples > min {
			min = historySamples
		}
		if c.points < min || !c.series[series] {
			t.Errorf("%s chart: %d points, series %v; want >= %d points of %s", chart, c.points, c.series, min, series)
		}
	}
}

// queueMail sends n messages, spread over the two test domains, and fails
// on any refusal.
func queueMail(t *testing.T, l *apptest.Levee, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		rcpt := "rcpt@example.test"
		if i%3 == 2 {
			rcpt = "someone@other.test"
		}
		if err := apptest.Send(l.SMTPAddr, "sender@client.test", []string{rcpt}, apptest.Message(i, 3000)); err != nil {
			t.Fatalf("message %d: %s", i, apptest.ReplyCode(err))
		}
	}
}

// historySamples is the number of samples /api/v1/queue/history holds now,
// or -1 when this Levee has no such endpoint yet.
func historySamples(t *testing.T, l *apptest.Levee) int {
	t.Helper()
	code, body := getBody(t, l.HTTPURL+"/api/v1/queue/history")
	switch code {
	case http.StatusNotFound:
		return -1
	case http.StatusOK:
	default:
		t.Fatalf("GET /api/v1/queue/history: %d %s", code, body)
	}
	var h struct {
		IntervalSeconds float64           `json:"interval_seconds"`
		Samples         []json.RawMessage `json:"samples"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("history: %v: %s", err, body)
	}
	return len(h.Samples)
}

// waitForRates waits, where the server keeps a history (and so samples
// rates), until the status carries rates over a real window.
func waitForRates(t *testing.T, l *apptest.Levee) {
	t.Helper()
	if historySamples(t, l) < 0 {
		t.Log("no /api/v1/queue/history on this server: rates are checked as whatever the status says")
		return
	}
	apptest.WaitFor(t, 30*time.Second, "rates over a window", func() bool {
		w, _ := lookup(queueStatus(l), "rates.window_seconds")
		f, _ := number(w)
		return f > 0
	})
}

func renderDashboard(t *testing.T, browser chromium, l *apptest.Levee) (*renderedPage, map[string]any) {
	t.Helper()
	rec := newStatusRecorder(t, l.HTTPURL)
	page := parseDashboard(t, browser.dumpDOM(t, rec.url+"/"))
	page.checkHealthy(t)
	text := func(f string) string {
		if els := page.fields[f]; len(els) > 0 {
			return els[0].text
		}
		return "?"
	}
	points := map[string]int{}
	for name, c := range page.charts {
		points[name] = c.points
	}
	t.Logf("page after %s polls shows status at %s: %s messages (%s), fill %s, ingest %s, drain %s, deferrals %s, concurrency %s; chart points %v",
		page.body["data-polls"], page.body["data-at"], text("messages"), text("bytes"), text("fill.max"),
		text("rates.ingest_per_second"), text("rates.drain_per_second"), text("rates.deferrals_per_second"),
		text("workers.concurrency"), points)
	return page, rec.status(t, page.body["data-at"])
}

func TestDashboardInChromium(t *testing.T) {
	browser := needChromium(t)

	t.Run("backlog", func(t *testing.T) {
		// Paused workers keep the mail queued, so the figures hold still;
		// a small max_msgs gives a fill ratio worth showing.
		cfg := apptest.Config(t)
		cfg.Worker.Concurrency = 0
		cfg.Worker.Autoscale.Enabled = false
		cfg.Queue.MaxMsgs = 40
		cfg.Queue.Partitions = 1 // a fill of exactly 30 of 40
		l := apptest.Start(t, cfg)
		queueMail(t, l, 0, 30)
		apptest.WaitFor(t, 10*time.Second, "30 messages queued", func() bool {
			n, _ := number(queueStatus(l)["messages"])
			return n == 30
		})
		waitForRates(t, l)
		samples := historySamples(t, l)

		page, rendered := renderDashboard(t, browser, l)
		page.checkFigures(t, rendered)
		page.checkStable(t, queueStatus(l))
		page.checkCharts(t, l, rendered, samples)
		if got := page.fields["messages"][0].text; got != "30" {
			t.Errorf("queue depth shows %q, want 30", got)
		}
		if len(page.domains) != 2 || page.domains[0].domain != "example.test" || page.domains[0].text != "20" {
			t.Errorf("top domains %+v, want example.test 20 then other.test 10", page.domains)
		}
		if len(page.partitions) != 1 || page.partitions[0].domain != "LEVEE_MAIL" || page.partitions[0].text != "30" {
			t.Errorf("partitions %+v, want the one stream LEVEE_MAIL with 30", page.partitions)
		}
		for _, f := range page.fields["fill.messages"] {
			if f.text != "75.0%" {
				t.Errorf("fill of max_msgs shows %q, want 75.0%%", f.text)
			}
		}

		shot := browser.screenshot(t, l.HTTPURL+"/")
		checkScreenshot(t, shot)
	})

	t.Run("draining", func(t *testing.T) {
		// Mail flows in while workers drain it: the rates and the
		// concurrency are live figures, checked against the exact status
		// the page rendered.
		cfg := apptest.Config(t)
		cfg.Worker.Concurrency = 2
		cfg.Worker.Autoscale.Enabled = false
		l := apptest.Start(t, cfg)
		stop := make(chan struct{})
		sent := make(chan int)
		stopSending := sync.OnceValue(func() int { close(stop); return <-sent })
		t.Cleanup(func() { stopSending() }) // before Levee stops, also on a failure
		go func() {
			n := 0
			defer func() { sent <- n }()
			tick := time.NewTicker(20 * time.Millisecond) // about 50 messages a second
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if err := apptest.Send(l.SMTPAddr, "sender@client.test", []string{"rcpt@example.test"}, apptest.Message(1000+n, 2000)); err != nil {
					t.Errorf("message %d: %s", n, apptest.ReplyCode(err))
					return
				}
				n++
			}
		}()
		apptest.WaitFor(t, 10*time.Second, "mail flowing", func() bool {
			n, _ := number(queueStatus(l)["last_seq"])
			return n >= 20
		})
		waitForRates(t, l)
		samples := historySamples(t, l)
		page, rendered := renderDashboard(t, browser, l)
		t.Logf("sent %d messages while the page was read", stopSending())

		page.checkFigures(t, rendered)
		page.checkCharts(t, l, rendered, samples)
		// Four partitions, each its own row; they add up to
		// the depth shown.
		var sum float64
		for i, p := range page.partitions {
			if want := fmt.Sprintf("LEVEE_MAIL_%d", i); p.domain != want {
				t.Errorf("partition row %d is %q, want %s", i, p.domain, want)
			}
			v, _ := strconv.ParseFloat(p.value, 64)
			sum += v
		}
		if depth, _ := number(rendered["messages"]); len(page.partitions) != cfg.Queue.Partitions || sum != depth {
			t.Errorf("partitions %+v add up to %v, want %d rows adding up to the depth %v", page.partitions, sum, cfg.Queue.Partitions, depth)
		}
		// The history endpoint came with the process stats that fill in
		// the workers' figures; before it, they may read 0.
		if c, ok := lookup(rendered, "workers.concurrency"); ok && samples >= 0 {
			if n, _ := number(c); n <= 0 {
				t.Errorf("workers.concurrency = %v with 2 delivery loops running", c)
			}
		}
	})
}

func checkScreenshot(t *testing.T, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if sz := img.Bounds().Size(); sz.X != 1280 || sz.Y != 900 {
		t.Errorf("screenshot is %v, want 1280x900", sz)
	}
	// A page that failed to render is one flat colour.
	colours := map[uint32]bool{}
	for y := 0; y < 900; y += 9 {
		for x := 0; x < 1280; x += 8 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if len(colours) < 20 {
		t.Errorf("screenshot has %d colours: the page did not render", len(colours))
	}
}

func keepScreenshot(t *testing.T, b []byte) {
	t.Helper()
	checkScreenshot(t, b)
	path := os.Getenv(dashboardScreenshotEnv)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("keep screenshot: %v", err)
	}
	t.Logf("screenshot kept in %s", path)
}

// TestDashboardScreenshotForDocs makes docs/dashboard.png, a queue at work:
// a surge piles up while no worker runs, the senders are deferred at the
// high watermark, then a worker process arrives and drains the backlog
// while mail keeps coming. It takes about a minute, so it runs only when
// asked:
//
//	LEVEE_DASHBOARD_SCREENSHOT=$PWD/docs/dashboard.png go test -run TestDashboardScreenshotForDocs ./cmd/levee/
func TestDashboardScreenshotForDocs(t *testing.T) {
	if os.Getenv(dashboardScreenshotEnv) == "" {
		t.Skipf("set %s=<file.png> to make the docs' screenshot", dashboardScreenshotEnv)
	}
	browser := needChromium(t)
	js := jetStream(t)

	// The front: SMTP and the web API, its own delivery loops paused.
	cfg := apptest.Config(t)
	cfg.Queue.Partitions = queue.DefaultPartitions // the picture shows the default
	cfg.Queue.URL = js.ClientURL()
	cfg.Queue.MaxMsgs = 400
	cfg.Worker.Concurrency = 0
	cfg.Worker.Autoscale.Enabled = false
	l := apptest.Start(t, cfg)

	const (
		rate         = 20 // messages a second
		workerAfter  = 26 * time.Second
		screenshotAt = 50 * time.Second
	)
	begin := time.Now()
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	var workerStarted bool
	accepted, deferred := 0, 0
	for i := 0; time.Since(begin) < screenshotAt; i++ {
		<-tick.C
		if !workerStarted && time.Since(begin) >= workerAfter {
			startWorkerProcess(t, js.ClientURL(), cfg.Queue.Partitions)
			workerStarted = true
		}
		rcpt := []string{"rcpt@example.test", "rcpt@example.test", "someone@other.test"}[i%3]
		switch err := apptest.Send(l.SMTPAddr, "sender@client.test", []string{rcpt}, apptest.Message(i, 2500+i%7*900)); apptest.ReplyCode(err) {
		case "":
			accepted++
		case "452 4.3.1":
			deferred++
		default:
			t.Fatalf("message %d: %s", i, apptest.ReplyCode(err))
		}
	}
	t.Logf("accepted %d, deferred %d", accepted, deferred)
	page, rendered := renderDashboard(t, browser, l)
	page.checkFigures(t, rendered)
	keepScreenshot(t, browser.screenshot(t, l.HTTPURL+"/"))
}

// startWorkerProcess runs a `levee worker` in this process against the
// JetStream at natsURL, with its own store, on the front's partitions.
func startWorkerProcess(t *testing.T, natsURL string, partitions int) {
	t.Helper()
	cfg := apptest.Config(t)
	cfg.Queue.URL = natsURL
	cfg.Queue.Partitions = partitions
	cfg.Worker.Concurrency = 2
	cfg.Worker.Autoscale.Enabled = false
	apptest.StartWith(t, cfg, app.RoleWorker, apptest.Log(t))
}
