package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Who may read what:
//
//   - the mailbox API and the dead letters (mail people wrote) need
//     http.read_token, or http.admin_token, as a bearer token once a read
//     token is set; without one they are open, as they always were;
//   - the ops API's changes and pprof need http.admin_token (needsAdminToken);
//   - the dashboard and the queue figures it polls, /healthz, /readyz and
//     /metrics hold no mail and stay open, so that probes, scrapers and the
//     dashboard work unchanged.
//
// And from which Host: every route except /healthz, /readyz and /metrics
// answers only to the names of hostPolicy, which keeps a web page from
// reading the API through DNS rebinding.

// hostExempt are the routes that answer whatever Host a request names:
// kubelet probes and Prometheus address a pod by whatever name or IP they
// were given, and nothing here holds mail.
var hostExempt = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// bearerToken is the credentials of an "Authorization: Bearer <token>"
// header. The scheme is case-insensitive (RFC 7235 section 2.1, RFC 6750
// section 2.1), and one or more spaces may separate it from the token.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// tokenIs compares in constant time. Hashes first: ConstantTimeCompare
// returns at once on a length mismatch, which would leak the length.
func tokenIs(got, want string) bool {
	if want == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// needsReadToken guards a route that shows mail. With no read token
// configured it is open; with one, the read token or the admin token (an
// operator may read what they may change) is needed.
func (s *Server) needsReadToken(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.ReadToken == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearerToken(r)
		// Both compared every time, so that the time taken does not say
		// which one matched.
		read, admin := tokenIs(got, s.cfg.ReadToken), tokenIs(got, s.cfg.AdminToken)
		if !ok || !(read || admin) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="levee"`)
			s.writeError(w, r, http.StatusUnauthorized, "read token missing or wrong (Authorization: Bearer <http.read_token>)")
			return
		}
		h(w, r)
	}
}

// hostPolicy is the set of Host names the server answers to.
// "localhost" and its subdomains always pass: browsers resolve them to
// loopback without asking DNS (RFC 6761), so they cannot be rebound.
type hostPolicy struct {
	any   bool            // every name: http.allowed_hosts "*", or a public listener left unconfigured
	names map[string]bool // lower case, no trailing dot
}

// newHostPolicy reads http.allowed_hosts. When it is empty, a server on a
// loopback address answers only to loopback names (localhost) and IP
// literals: that is what `make run` and curl to 127.0.0.1:8025 or
// localhost:8025 send, and it is exactly what a DNS rebinding cannot send
// (the victim's browser names the attacker's domain in Host), so the
// default local setup is safe without configuration. A server on any
// other address cannot know its public names and answers to all of them,
// as before: set http.allowed_hosts (and http.read_token) there.
func newHostPolicy(cfg Config) hostPolicy {
	if len(cfg.AllowedHosts) == 0 {
		if listensOnLoopback(cfg.Addr) {
			return hostPolicy{}
		}
		return hostPolicy{any: true}
	}
	p := hostPolicy{names: map[string]bool{}}
	for _, h := range cfg.AllowedHosts {
		if h == "*" {
			p.any = true
		}
		p.names[normalHost(h)] = true
	}
	return p
}

// allows reports whether a request's Host (r.Host, port and all) may be
// answered. IP literals and localhost always may: a rebinding needs a name
// that public DNS answers, and probes, proxies and curl often address a
// server by its IP. An empty Host (HTTP/1.0) is no browser's.
func (p hostPolicy) allows(hostport string) bool {
	if p.any || hostport == "" {
		return true
	}
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = normalHost(h)
	if net.ParseIP(strings.Trim(h, "[]")) != nil {
		return true
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	return p.names[h]
}

func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// listensOnLoopback reports whether addr (host:port) is a loopback address.
// An empty host (":8025") is every interface.
func listensOnLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHost answers 421 Misdirected Request (RFC 9110 section 15.5.20: this
// server does not answer for that authority) to a Host outside the policy.
func (s *Server) checkHost(h http.HandlerFunc) http.HandlerFunc {
	if s.hosts.any {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.allows(r.Host) {
			host := r.Host
			if len(host) > 100 {
				host = host[:100] + "..."
			}
			s.writeError(w, r, http.StatusMisdirectedRequest,
				fmt.Sprintf("this server does not answer to host %q: list it in http.allowed_hosts (LEVEE_HTTP_ALLOWED_HOSTS), or address it by IP", host))
			return
		}
		h(w, r)
	}
}

// checkAllowedHosts validates http.allowed_hosts: names, "*" or IP
// literals, without a port or scheme (Host is compared without its port).
func checkAllowedHosts(hosts []string) error {
	for _, h := range hosts {
		switch {
		case h == "*":
		case strings.Contains(h, "://") || strings.ContainsAny(h, "/ ") || h == "" || h == ".":
			return fmt.Errorf("http.allowed_hosts: %q is not a host name (want e.g. mail.example.com, without scheme or path)", h)
		case net.ParseIP(strings.Trim(h, "[]")) == nil && strings.Contains(h, ":"):
			return fmt.Errorf("http.allowed_hosts: %q: give the name without a port (the port is not compared)", h)
		}
	}
	return nil
}
