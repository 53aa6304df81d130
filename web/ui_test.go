package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func (f *fixture) getWith(t *testing.T, method, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := newRequest(method, target, nil)
	for k, vs := range header {
		req.Header[k] = vs
	}
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, req)
	return rec
}

// browserAccept is what Chromium sends when it navigates to a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"

func wantSelfOnlyCSP(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	csp := rec.Header().Get("Content-Security-Policy")
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	if directives["default-src"] != "'none'" {
		t.Errorf("CSP default-src = %q, want 'none' (everything not named is refused): %s", directives["default-src"], csp)
	}
	for _, name := range []string{"script-src", "style-src", "img-src", "connect-src"} {
		if directives[name] != "'self'" {
			t.Errorf("CSP %s = %q, want only 'self': %s", name, directives[name], csp)
		}
	}
	if directives["frame-ancestors"] != "'none'" {
		t.Errorf("CSP frame-ancestors = %q, want 'none': %s", directives["frame-ancestors"], csp)
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*", "data:"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP allows %s: %s", bad, csp)
		}
	}
}

var assetRef = regexp.MustCompile(`(?:src|href)="(/ui/[^"]+)"`)

func TestDashboardPage(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	rec := f.getWith(t, http.MethodGet, "/", http.Header{"Accept": {browserAccept}})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / as a browser: status %d: %s", rec.Code, rec.Body)
	}
	h := rec.Header()
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	wantSelfOnlyCSP(t, rec)
	if got := h.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("Cache-Control = %q, want no-cache (the page names the current assets)", got)
	}
	if !slices.Contains(h.Values("Vary"), "Accept") {
		t.Errorf("Vary = %q, want Accept: / answers JSON to other clients", h.Values("Vary"))
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("ETag") == "" {
		t.Errorf("nosniff %q, ETag %q", h.Get("X-Content-Type-Options"), h.Get("ETag"))
	}
	body := rec.Body.String()
	for _, want := range []string{`data-field="messages"`, `data-field="fill.max"`, `data-field="rates.ingest_per_second"`,
		`data-field="workers.concurrency"`, `data-field="dead_letters"`, `data-field="limits.max_bytes"`,
		`id="top-domains"`, `data-chart="depth"`, `data-chart="rates"`, `data-chart="fill"`, `data-chart="workers"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	refs := assetRef.FindAllStringSubmatch(body, -1)
	if len(refs) < 3 {
		t.Fatalf("page references %d files under /ui/, want the script, the stylesheet and the icon", len(refs))
	}
	for _, m := range refs {
		if !strings.Contains(m[1], "?v=") {
			t.Errorf("page references %s without its content hash", m[1])
		}
	}

	// A conditional reload costs a 304.
	again := f.getWith(t, http.MethodGet, "/", http.Header{"Accept": {browserAccept}, "If-None-Match": {h.Get("ETag")}})
	if again.Code != http.StatusNotModified || again.Body.Len() != 0 {
		t.Errorf("GET / with If-None-Match: status %d, %d bytes; want 304 and none", again.Code, again.Body.Len())
	}
}

func TestIndexAnswersScriptsWithJSON(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, accept := range []string{"", "*/*", "application/json", "text/html;q=0, application/json"} {
		rec := f.getWith(t, http.MethodGet, "/", http.Header{"Accept": {accept}})
		var index struct{ Endpoints []string }
		decode(t, rec, http.StatusOK, &index)
		if !slices.Contains(index.Endpoints, "GET /api/v1/queue") {
			t.Errorf("Accept %q: endpoints %v lack the queue status", accept, index.Endpoints)
		}
		if !slices.Contains(rec.Header().Values("Vary"), "Accept") {
			t.Errorf("Accept %q: no Vary: Accept on the JSON answer", accept)
		}
	}
}

func TestDashboardAssets(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	page := f.getWith(t, http.MethodGet, "/", http.Header{"Accept": {browserAccept}}).Body.String()
	wantType := map[string]string{
		".js":  "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8",
		".svg": "image/svg+xml",
	}
	for _, m := range assetRef.FindAllStringSubmatch(page, -1) {
		ref := m[1]
		name, version, _ := strings.Cut(strings.TrimPrefix(ref, "/ui/"), "?v=")
		ext := name[strings.LastIndexByte(name, '.'):]

		rec := f.get(t, ref)
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Fatalf("GET %s: status %d, %d bytes", ref, rec.Code, rec.Body.Len())
		}
		h := rec.Header()
		if got := h.Get("Content-Type"); got != wantType[ext] {
			t.Errorf("%s: Content-Type = %q, want %q", name, got, wantType[ext])
		}
		if got := h.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("%s under its current hash: Cache-Control = %q, want immutable", name, got)
		}
		if got := h.Get("ETag"); got != `"`+version+`"` {
			t.Errorf("%s: ETag = %q, want the hash the page names, %q", name, got, version)
		}
		wantSelfOnlyCSP(t, rec)

		// Without the hash (or with an old one) the file may change under
		// the same URL: revalidate every time.
		for _, target := range []string{"/ui/" + name, "/ui/" + name + "?v=0000"} {
			if got := f.get(t, target).Header().Get("Cache-Control"); got != "no-cache" {
				t.Errorf("GET %s: Cache-Control = %q, want no-cache", target, got)
			}
		}
		cond := f.getWith(t, http.MethodGet, ref, http.Header{"If-None-Match": {h.Get("ETag")}})
		if cond.Code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match: status %d, want 304", name, cond.Code)
		}
		head := f.do(t, http.MethodHead, ref)
		if head.Code != http.StatusOK || head.Body.Len() != 0 || head.Header().Get("Content-Length") != h.Get("Content-Length") {
			t.Errorf("HEAD %s: status %d, %d body bytes, Content-Length %q (GET: %q)",
				name, head.Code, head.Body.Len(), head.Header().Get("Content-Length"), h.Get("Content-Length"))
		}
	}
	for _, target := range []string{"/ui/nope.js", "/ui/index.html", "/ui/", "/ui/%2e%2e%2fui.go", "/ui/dashboard.js/x"} {
		rec := f.get(t, target)
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", target, rec.Code)
		}
	}
	wantError(t, f.get(t, "/ui/nope.js"), http.StatusNotFound, "not found")
}

// TestDashboardIsSelfContained checks what makes the page work offline and
// under its CSP: every file it loads is embedded, nothing names another
// host, and there is no inline script or style for the policy to block.
func TestDashboardIsSelfContained(t *testing.T) {
	names, err := fs.Glob(uiFiles, "ui/*")
	if err != nil || len(names) == 0 {
		t.Fatalf("embedded ui files: %v %v", names, err)
	}
	// The one absolute URL allowed is SVG's namespace, an identifier that
	// is never fetched.
	external := regexp.MustCompile(`(?:https?:)?//[a-zA-Z0-9.-]+\.[a-z]{2,}`)
	for _, name := range names {
		b, _ := fs.ReadFile(uiFiles, name)
		s := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "")
		if m := external.FindString(s); m != "" {
			t.Errorf("%s names another host: %q", name, m)
		}
	}
	page, _ := fs.ReadFile(uiFiles, "ui/index.html")
	html := string(page)
	for _, bad := range []string{"<style", " style=", "onclick=", "onload=", "javascript:"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html has inline %q, which the CSP blocks", bad)
		}
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(html) {
		t.Error("index.html has an inline script, which the CSP blocks")
	}
	for _, m := range assetRef.FindAllStringSubmatch(html, -1) {
		if _, err := fs.Stat(uiFiles, "ui/"+strings.TrimPrefix(m[1], "/ui/")); err != nil {
			t.Errorf("index.html loads %s, which is not embedded", m[1])
		}
	}

	// Every figure on the page has a formatter in the script (the script
	// also reports a missing one on the page, but only in a browser).
	js, _ := fs.ReadFile(uiFiles, "ui/dashboard.js")
	for _, m := range regexp.MustCompile(`data-field="([^"]+)"`).FindAllStringSubmatch(html, -1) {
		if !strings.Contains(string(js), "'"+m[1]+"':") {
			t.Errorf("data-field %q has no entry in dashboard.js FIELDS", m[1])
		}
	}
}

func TestLoadDashboardRejectsBadFileSets(t *testing.T) {
	page := &fstest.MapFile{Data: []byte(`<script src="/ui/a.js"></script>`)}
	for name, fsys := range map[string]fstest.MapFS{
		"no page":         {"ui/a.js": {Data: []byte("1")}},
		"unknown type":    {"ui/index.html": page, "ui/a.js": {Data: []byte("1")}, "ui/notes.txt": {Data: []byte("x")}},
		"no ui directory": {"index.html": page},
	} {
		if _, err := loadDashboard(fsys); err == nil {
			t.Errorf("%s: loadDashboard accepted it", name)
		}
	}
	d, err := loadDashboard(fstest.MapFS{"ui/index.html": page, "ui/a.js": {Data: []byte("1")}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `<script src="/ui/a.js?v=` + d.assets["a.js"].version + `"></script>`; string(d.index.body) != want {
		t.Errorf("page = %s, want %s", d.index.body, want)
	}
}

func TestAcceptsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		browserAccept:                 true,
		"text/html":                   true,
		"TEXT/HTML; charset=utf-8":    true,
		"application/json, text/html": true,
		"text/html;q=0.5":             true,
		"text/html;q=0":               false,
		"text/html; q=0.0":            false,
		"":                            false,
		"*/*":                         false,
		"application/json":            false,
		"text/plain":                  false,
	} {
		r := newRequest(http.MethodGet, "/", nil)
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		if got := acceptsHTML(r); got != want {
			t.Errorf("acceptsHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}
