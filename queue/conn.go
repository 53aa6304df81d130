package queue

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/levee-mail/levee/internal/redact"
)

// MinServerVersion is the oldest nats-server Levee runs on. Levee keeps
// its partition layout in stream metadata (2.10.0; an older server drops
// it silently), and its consumers have a BackOff with an unlimited
// MaxDeliver (see consumerConfig), which servers before 2.10.14 refuse
// with "max deliver is required to be > length of backoff values"
// (nats-server cafb681). Atomic batch publish (2.12) is used when the
// server has it, and is not required.
const MinServerVersion = "2.10.14"

var minServer = [3]int{2, 10, 14}

// Security is how Levee proves who it is to an external NATS and checks
// who the server is: at most one of a credentials file, an NKey seed file
// or a user and password (or credentials in queue.nats_url), and TLS with
// a CA and a client certificate. Files are read again on every
// (re)connect, so a renewed certificate or credentials file needs no
// restart. It applies to queue.nats_url only: the embedded server takes
// none.
type Security struct {
	Creds    string        `config:"nats_creds" flag:"nats-creds" help:"external NATS: credentials file (.creds: user JWT and NKey seed) of a decentralized-auth (operator) setup"`
	NkeySeed string        `config:"nats_nkey_seed" flag:"nats-nkey-seed" help:"external NATS: file holding the NKey user seed (SU...) that signs the server's challenge"`
	User     string        `config:"nats_user" flag:"nats-user" help:"external NATS: user name, with queue.nats_password"`
	Password redact.Secret `config:"nats_password" flag:"nats-password" help:"external NATS: password of queue.nats_user. Prefer the environment variable: flags show in ps; never logged"`
	TLSCA    string        `config:"nats_tls_ca" flag:"nats-tls-ca" help:"external NATS: PEM file of the CA(s) that signed the servers' certificates (default: the system's); turns TLS on"`
	TLSCert  string        `config:"nats_tls_cert" flag:"nats-tls-cert" help:"external NATS: PEM client certificate, for servers that verify clients (with queue.nats_tls_key); turns TLS on"`
	TLSKey   string        `config:"nats_tls_key" flag:"nats-tls-key" help:"external NATS: PEM private key of queue.nats_tls_cert"`
}

// set lists the keys that are set, by name.
func (s Security) set() []string {
	var keys []string
	for _, kv := range []struct{ key, v string }{
		{"queue.nats_creds", s.Creds}, {"queue.nats_nkey_seed", s.NkeySeed},
		{"queue.nats_user", s.User}, {"queue.nats_password", string(s.Password)},
		{"queue.nats_tls_ca", s.TLSCA}, {"queue.nats_tls_cert", s.TLSCert}, {"queue.nats_tls_key", s.TLSKey},
	} {
		if kv.v != "" {
			keys = append(keys, kv.key)
		}
	}
	return keys
}

// validate checks s against the URL it is for, naming the keys: the ways
// to authenticate exclude each other, the TLS pair comes whole, and every
// file can be read (see options for their contents).
func (s Security) validate(natsURL string) error {
	if natsURL == "" {
		if set := s.set(); len(set) > 0 {
			return fmt.Errorf("%s: applies to an external NATS only: set queue.nats_url too (the embedded server takes no credentials)", set[0])
		}
		return nil
	}
	var auth []string
	if urlHasUser(natsURL) {
		auth = append(auth, "queue.nats_url (its user)")
	}
	if s.Creds != "" {
		auth = append(auth, "queue.nats_creds")
	}
	if s.NkeySeed != "" {
		auth = append(auth, "queue.nats_nkey_seed")
	}
	if s.User != "" {
		auth = append(auth, "queue.nats_user")
	}
	switch {
	case len(auth) > 1:
		return fmt.Errorf("%s: set one way to authenticate to NATS, not %d", strings.Join(auth, ", "), len(auth))
	case s.User != "" && s.Password == "":
		return fmt.Errorf("queue.nats_password: must be set with queue.nats_user (best as LEVEE_QUEUE_NATS_PASSWORD: flags show in ps)")
	case s.User == "" && s.Password != "":
		return fmt.Errorf("queue.nats_user: must be set with queue.nats_password")
	case s.TLSCert != "" && s.TLSKey == "":
		return fmt.Errorf("queue.nats_tls_key: must be set with queue.nats_tls_cert")
	case s.TLSCert == "" && s.TLSKey != "":
		return fmt.Errorf("queue.nats_tls_cert: must be set with queue.nats_tls_key")
	}
	for _, f := range []struct{ key, path string }{
		{"queue.nats_creds", s.Creds}, {"queue.nats_nkey_seed", s.NkeySeed},
		{"queue.nats_tls_ca", s.TLSCA}, {"queue.nats_tls_cert", s.TLSCert}, {"queue.nats_tls_key", s.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	return nil
}

func readable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// urlHasUser reports whether any of the comma-separated server URLs
// carries a user or token.
func urlHasUser(s string) bool {
	for part := range strings.SplitSeq(s, ",") {
		if u, err := url.Parse(strings.TrimSpace(part)); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// options turns s into nats.go options, reading every file once now so
// that a bad one fails at start naming its key (nats.go reads a
// credentials file only when it connects).
func (s Security) options() ([]nats.Option, error) {
	var opts []nats.Option
	if s.Creds != "" {
		o := nats.UserCredentials(s.Creds)
		if err := tryUserJWT(o); err != nil {
			return nil, fmt.Errorf("queue.nats_creds: %s: %w", s.Creds, err)
		}
		opts = append(opts, o)
	}
	if s.NkeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(s.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("queue.nats_nkey_seed: %s: %w", s.NkeySeed, err)
		}
		opts = append(opts, o)
	}
	if s.User != "" {
		opts = append(opts, nats.UserInfo(s.User, string(s.Password)))
	}
	if s.TLSCA != "" {
		o := nats.RootCAs(s.TLSCA)
		if err := o(&nats.Options{}); err != nil {
			return nil, fmt.Errorf("queue.nats_tls_ca: %w", err)
		}
		opts = append(opts, o)
	}
	if s.TLSCert != "" {
		o := nats.ClientCert(s.TLSCert, s.TLSKey)
		if err := o(&nats.Options{}); err != nil {
			return nil, fmt.Errorf("queue.nats_tls_cert, queue.nats_tls_key: %w", err)
		}
		opts = append(opts, o)
	}
	return opts, nil
}

// tryUserJWT reads the JWT and signs with the seed as a connect would.
func tryUserJWT(o nats.Option) error {
	var no nats.Options
	if err := o(&no); err != nil {
		return err
	}
	if _, err := no.UserJWT(); err != nil {
		return err
	}
	_, err := no.SignatureCB([]byte("levee"))
	return err
}

// Dial connects to the NATS at natsURL as sec says, with opts, and refuses
// a server older than MinServerVersion (ErrServerTooOld). Its errors never
// show a password, and say which keys to look at when the server refuses
// Levee's credentials or certificates.
func Dial(natsURL string, sec Security, opts ...nats.Option) (*nats.Conn, error) {
	if err := sec.validate(natsURL); err != nil {
		return nil, err
	}
	secOpts, err := sec.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(natsURL, append(opts, secOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("queue: connect %s: %w%s", redact.URL(natsURL), err, connectHint(err, natsURL, sec))
	}
	if err := CheckServerVersion(nc); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// connectHint names the keys that a refused connection points at.
func connectHint(err error, natsURL string, sec Security) string {
	var unknownCA x509.UnknownAuthorityError
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired):
		if set := sec.set(); len(set) > 0 {
			return " (the server refused the credentials of " + strings.Join(set, ", ") + ")"
		}
		if urlHasUser(natsURL) {
			return " (the server refused the credentials in queue.nats_url)"
		}
		return " (the server wants credentials: queue.nats_creds, queue.nats_nkey_seed, or queue.nats_user and queue.nats_password)"
	case errors.Is(err, nats.ErrSecureConnRequired):
		return " (the server requires TLS: use a tls:// URL, with queue.nats_tls_ca for a private CA)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return " (TLS is on, by a tls:// URL or queue.nats_tls_*, and the server does not offer it)"
	case errors.As(err, &unknownCA):
		return " (the server's certificate is not signed by a CA Levee trusts: set queue.nats_tls_ca)"
	case errors.Is(err, nats.ErrTLS), strings.Contains(err.Error(), "certificate required"), strings.Contains(err.Error(), "bad certificate"):
		// The server hung up after the handshake, or said why in a TLS
		// alert (which crypto/tls surfaces only as text): the client
		// certificate is missing or not one it trusts.
		if sec.TLSCert == "" {
			return " (the server may want a client certificate: queue.nats_tls_cert and queue.nats_tls_key)"
		}
		return " (the server may not trust the client certificate of queue.nats_tls_cert)"
	}
	return ""
}

// CheckServerVersion returns ErrServerTooOld when the server nc is
// connected to is older than MinServerVersion.
func CheckServerVersion(nc *nats.Conn) error {
	v := nc.ConnectedServerVersion()
	if ok, err := versionAtLeast(v, minServer); err != nil || !ok {
		return fmt.Errorf("%w: nats-server %q at %s; Levee needs %s or later (stream metadata, and consumer backoff with unlimited redeliveries): upgrade the NATS servers",
			ErrServerTooOld, v, nc.ConnectedUrlRedacted(), MinServerVersion)
	}
	return nil
}

var versionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)`)

// versionAtLeast compares a server version (2.10.14, v2.11.0-RC.1) with
// min by major, minor and patch; a pre-release counts as its release.
func versionAtLeast(v string, min [3]int) (bool, error) {
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return false, fmt.Errorf("not a version: %q", v)
	}
	for i := range 3 {
		n, err := strconv.Atoi(m[i+1])
		if err != nil {
			return false, err
		}
		if n != min[i] {
			return n > min[i], nil
		}
	}
	return true, nil
}
