package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// uiFiles is the dashboard: hand-written HTML, JS and CSS, embedded so that
// the page works offline and always matches the binary's API.
//
//go:embed ui
var uiFiles embed.FS

// contentSecurityPolicy allows the page only its own files and its own API:
// no inline script or style, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Cache-Control values: the page is revalidated on every load (cheap, by
// ETag) and names each asset with its content hash, so an asset requested
// under its current hash can be cached for good.
const (
	cacheRevalidate = "no-cache"
	cacheImmutable  = "public, max-age=31536000, immutable"
)

var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

type uiFile struct {
	body        []byte
	contentType string
	etag        string
	version     string // content hash, the ?v= of the asset's URL in the page
}

// dashboardUI is the page and its assets, ready to serve.
type dashboardUI struct {
	index  uiFile
	assets map[string]uiFile // by file name, under /ui/
}

var dashboard = mustLoadDashboard(uiFiles)

func mustLoadDashboard(fsys fs.FS) *dashboardUI {
	d, err := loadDashboard(fsys)
	if err != nil {
		panic(err) // the embedded files are part of the binary: a build defect
	}
	return d
}

// loadDashboard reads ui/ and rewrites the page's references to its assets
// ("/ui/dashboard.js") to carry their content hash ("/ui/dashboard.js?v=…").
func loadDashboard(fsys fs.FS) (*dashboardUI, error) {
	d := &dashboardUI{assets: map[string]uiFile{}}
	entries, err := fs.ReadDir(fsys, "ui")
	if err != nil {
		return nil, fmt.Errorf("web: dashboard files: %w", err)
	}
	var page []byte
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := e.Name()
		ct, ok := uiContentTypes[path.Ext(name)]
		if !ok {
			return nil, fmt.Errorf("web: dashboard file %s: no content type for its extension", name)
		}
		b, err := fs.ReadFile(fsys, "ui/"+name)
		if err != nil {
			return nil, fmt.Errorf("web: dashboard file %s: %w", name, err)
		}
		if name == "index.html" {
			page = b
			continue
		}
		d.assets[name] = newUIFile(b, ct)
	}
	if page == nil {
		return nil, fmt.Errorf("web: dashboard files: no ui/index.html")
	}
	var pairs []string
	for name, a := range d.assets {
		ref := `"/ui/` + name + `"`
		if !bytes.Contains(page, []byte(ref)) {
			continue // not referenced by the page (served all the same)
		}
		pairs = append(pairs, ref, `"/ui/`+name+`?v=`+a.version+`"`)
	}
	d.index = newUIFile([]byte(strings.NewReplacer(pairs...).Replace(string(page))), uiContentTypes[".html"])
	return d, nil
}

func newUIFile(b []byte, contentType string) uiFile {
	sum := sha256.Sum256(b)
	v := hex.EncodeToString(sum[:8])
	return uiFile{body: b, contentType: contentType, etag: `"` + v + `"`, version: v}
}

// uiRoutes registers the pages for people: the dashboard at / and its files.
func (s *Server) uiRoutes() {
	s.handle("GET /{$}", s.index)
	s.handle("GET /ui/{file}", s.uiAsset)
}

// index answers a browser with the dashboard, and any other client (curl,
// a script) with the list of endpoints, as this path always has.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Vary", "Accept")
	if !acceptsHTML(r) {
		s.writeJSON(w, r, http.StatusOK, struct {
			Service   string   `json:"service"`
			Endpoints []string `json:"endpoints"`
		}{"levee", s.patterns})
		return
	}
	serveUIFile(w, r, dashboard.index, cacheRevalidate)
}

func (s *Server) uiAsset(w http.ResponseWriter, r *http.Request) {
	f, ok := dashboard.assets[r.PathValue("file")]
	if !ok {
		s.writeError(w, r, http.StatusNotFound, "not found")
		return
	}
	cache := cacheRevalidate
	if r.URL.Query().Get("v") == f.version {
		cache = cacheImmutable
	}
	serveUIFile(w, r, f, cache)
}

// serveUIFile lets net/http answer conditional (If-None-Match: 304), range
// and HEAD requests; the content type is set, never sniffed.
func serveUIFile(w http.ResponseWriter, r *http.Request, f uiFile, cache string) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", cache)
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// acceptsHTML reports whether the client asked for HTML. Browsers name
// text/html in every navigation; clients that send nothing or */* get JSON.
func acceptsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(mt), "text/html") {
				continue
			}
			// "text/html;q=0" means "not HTML".
			for _, p := range strings.Split(params, ";") {
				if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "q" {
					if q := strings.TrimSpace(v); q == "0" || strings.Trim(q, "0.") == "" {
						return false
					}
				}
			}
			return true
		}
	}
	return false
}
