package ingest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Defaults, chosen for an inbound MX that must not fall over under a surge.
const (
	DefaultAddr            = "127.0.0.1:2525"
	DefaultMaxMessageBytes = 10 << 20
	DefaultMaxRecipients   = 100
	// DefaultMaxLineLength is generous: RFC 5321 asks senders for 1,000,
	// but real mail has longer lines (one-line HTML), Postfix takes them, and
	// refusing is a bounce. It also bounds one command line's buffer.
	DefaultMaxLineLength       = 1 << 20
	DefaultReadTimeout         = 2 * time.Minute
	DefaultWriteTimeout        = time.Minute
	DefaultMinDataRate         = 500 // bytes a second, Postfix's smtpd_min_data_rate
	DefaultMaxBytesInFlight    = 128 << 20
	DefaultMaxSessionDuration  = time.Hour
	DefaultStressTimeout       = 10 * time.Second
	DefaultPublishTimeout      = 30 * time.Second
	DefaultMaxConnections      = 1000
	DefaultMaxConnectionsPerIP = 100
	DefaultHighWatermark       = 0.9
	DefaultLowWatermark        = 0.8
)

// minLineLength is what RFC 5321 4.5.3.1.6 obliges every server to take
// (1000 octets including CRLF); a smaller limit would refuse conforming mail.
const minLineLength = 1000

// Config is the SMTP receiver's configuration (YAML section "smtp"). Zero
// values mean "default" except for Domains/AcceptAllDomains, which must be
// set on purpose.
type Config struct {
	// Addr is the TCP address to listen on.
	Addr string `config:"addr" help:"SMTP listen address"`
	// Hostname is this server's name in the greeting and in the "by" clause
	// of the Received header. Default: os.Hostname(), else "levee".
	Hostname string `config:"hostname" default:"this host's name" help:"name in the SMTP banner and the Received header"`
	// Domains are the recipient domains accepted (exact match, case-insensitive).
	Domains []string `config:"domains" flag:"domains" help:"recipient domains to accept, comma-separated (others: 550 5.7.1)"`
	// AcceptAllDomains accepts any recipient domain. It must be set
	// explicitly: an empty Domains list is a config error, not "accept all".
	AcceptAllDomains bool `config:"accept_all_domains" help:"accept mail for every recipient domain (explicit opt-in)"`
	// TLSCert and TLSKey are PEM files of the certificate (with its chain)
	// and key offered by STARTTLS; both or neither. They are read again
	// when they change (a renewal needs no restart).
	TLSCert string `config:"tls_cert" help:"PEM certificate chain for STARTTLS (with smtp.tls_key; read again when it changes); empty: no STARTTLS"`
	TLSKey  string `config:"tls_key" help:"PEM private key for STARTTLS"`
	// MaxMessageBytes is the largest DATA accepted, advertised as SIZE (RFC
	// 1870): a message of exactly this size is taken (see sizeAdvert); the
	// Received header Levee adds is not counted.
	MaxMessageBytes int64 `config:"max_message_bytes" unit:"bytes" help:"largest message accepted, advertised as SIZE (larger: 552 5.3.4)"`
	// MaxBytesInFlight bounds the message bytes all sessions hold in memory
	// at once (see memoryBudget); past it, 452 4.3.1.
	MaxBytesInFlight int64 `config:"max_bytes_in_flight" unit:"bytes" help:"message bytes all SMTP sessions may hold in memory at once, read but not yet queued (more: 452 4.3.1); at least twice smtp.max_message_bytes"`
	// ProxyProtocolFrom lists the load balancers (addresses or CIDRs) whose
	// connections start with a PROXY protocol header (v1 or v2) naming the
	// real client, which then counts for the per-IP limits and the Received
	// header. Connections from elsewhere are taken as they come.
	ProxyProtocolFrom []string `config:"proxy_protocol_from" help:"load balancers (addresses or CIDRs, comma-separated) whose connections start with a PROXY protocol v1/v2 header naming the real client; empty: none"`
	// MaxMessagesPerClient and MaxMessagesPerNetwork limit the messages a
	// client (an IPv4 address, an IPv6 /64) and its network (IPv4 /24, IPv6
	// /48) may start a minute; over either, MAIL gets 451 4.7.1. 0: no limit
	// (the default, as Postfix's smtpd_client_message_rate_limit).
	MaxMessagesPerClient  int `config:"max_messages_per_client" help:"messages a minute one client may send (an IPv4 address, an IPv6 /64; more: 451 4.7.1); 0: no limit"`
	MaxMessagesPerNetwork int `config:"max_messages_per_network" help:"messages a minute one network may send (an IPv4 /24, an IPv6 /48; more: 451 4.7.1); 0: no limit"`
	// MaxRecipients caps RCPTs per transaction; more get 452 4.5.3.
	MaxRecipients int `config:"max_recipients" help:"recipients per message (more: 452 4.5.3)"`
	// MaxLineLength caps any line, commands and DATA alike (at least 1000).
	// go-smtp has one limit for both; a command line is read into memory,
	// a DATA line is not (it streams into the message buffer).
	MaxLineLength int `config:"max_line_length" unit:"bytes" help:"longest line taken, in commands and DATA (longer: 500 5.6.0, the connection closes); the message size limit still applies"`
	// ReadTimeout is an idle timeout: the longest wait for the next byte,
	// renewed on every read, including inside DATA. A slow but live sender
	// is never cut off; a silent one is, after this long.
	ReadTimeout time.Duration `config:"read_timeout" help:"idle read deadline, renewed by every read including during DATA"`
	// MinDataRate is the slowest DATA or BDAT transfer kept: after a grace
	// of ReadTimeout, the message must have arrived at this many bytes a
	// second on average. A byte every few seconds renews the idle deadline
	// forever; this does not (slowloris).
	MinDataRate int64 `config:"min_data_rate" unit:"bytes" help:"slowest DATA transfer kept, in bytes a second after a grace of smtp.read_timeout (slower: 421 4.4.2)"`
	// MaxSessionDuration caps a connection's lifetime, however busy.
	MaxSessionDuration time.Duration `config:"max_session_duration" help:"longest SMTP connection, however active (then 421 4.4.2; the sender reconnects)"`
	// StressTimeout: when every connection slot is taken, a new client
	// takes the slot of a stalled connection: one that moved no mail
	// forward (MAIL, RCPT, a message read; NOOP and RSET do not count) for
	// this long, or whose DATA, counted from this long after it began, is
	// behind MinDataRate. Well-behaved senders move on within milliseconds
	// or stream at speed; connections held by trickled bytes or idle
	// commands give way.
	StressTimeout time.Duration `config:"stress_timeout" help:"when every connection slot is taken, a connection that moved no mail forward for this long (NOOPs do not count), or whose DATA is behind smtp.min_data_rate after it, gives its slot to a new client (421 4.4.2)"`
	// WriteTimeout bounds each reply write.
	WriteTimeout time.Duration `config:"write_timeout" help:"write deadline per reply"`
	// PublishTimeout bounds one Publish call; past it the sender gets 451 4.3.0.
	PublishTimeout time.Duration `config:"publish_timeout" help:"how long DATA waits for the queue's acknowledgement (then 451 4.3.0)"`
	// MaxConnections caps open SMTP connections; past it, 421 4.7.0.
	MaxConnections int `config:"max_connections" help:"concurrent SMTP connections (more: 421 4.7.0)"`
	// MaxConnectionsPerIP caps open connections from one client IP.
	MaxConnectionsPerIP int `config:"max_connections_per_ip" help:"concurrent SMTP connections per client IP, an IPv6 client counted by its /64 (more: 421 4.7.0)"`
	// HighWatermark is the queue fill ratio at which MAIL is refused with
	// 452 4.3.1 until the fill drops below LowWatermark.
	HighWatermark float64 `config:"high_watermark" help:"queue fill ratio at which MAIL FROM is deferred with 452 4.3.1"`
	// LowWatermark: see HighWatermark.
	LowWatermark float64 `config:"low_watermark" help:"queue fill ratio below which MAIL FROM is accepted again"`
}

// WithDefaults returns c with zero fields set to their defaults and the
// domain list normalised (lower case, no trailing dot).
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Hostname == "" {
		c.Hostname = defaultHostname()
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxLineLength == 0 {
		c.MaxLineLength = DefaultMaxLineLength
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxBytesInFlight == 0 {
		c.MaxBytesInFlight = max(DefaultMaxBytesInFlight, 2*c.MaxMessageBytes)
	}
	if c.MinDataRate == 0 {
		c.MinDataRate = DefaultMinDataRate
	}
	if c.MaxSessionDuration == 0 {
		c.MaxSessionDuration = DefaultMaxSessionDuration
	}
	if c.StressTimeout == 0 {
		c.StressTimeout = DefaultStressTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = min(DefaultMaxConnectionsPerIP, c.MaxConnections)
	}
	if c.HighWatermark == 0 {
		c.HighWatermark = DefaultHighWatermark
	}
	if c.LowWatermark == 0 {
		c.LowWatermark = min(DefaultLowWatermark, c.HighWatermark*0.9)
	}
	if c.Domains != nil {
		ds := make([]string, len(c.Domains))
		for i, d := range c.Domains {
			ds[i] = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		}
		c.Domains = ds
	}
	return c
}

func defaultHostname() string {
	if h, err := os.Hostname(); err == nil && validDomain(h) {
		return h
	}
	return "levee"
}

// Validate reports every problem at once, each naming its YAML key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: smtp.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if c.Addr == "" {
		bad("addr", "must not be empty")
	}
	if c.Hostname == "" || !validDomain(c.Hostname) {
		bad("hostname", "%q is not a valid host name", c.Hostname)
	}
	if len(c.Domains) == 0 && !c.AcceptAllDomains {
		bad("domains", "must list at least one recipient domain (or set smtp.accept_all_domains: true)")
	}
	for _, d := range c.Domains {
		if !validDomain(d) {
			bad("domains", "%q is not a valid domain", d)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_cert", "smtp.tls_cert and smtp.tls_key go together")
	}
	if c.MaxMessageBytes <= 0 {
		bad("max_message_bytes", "must be > 0")
	}
	if c.MaxMessageBytes > 1<<32-1 {
		// go-smtp parses SIZE= as a uint32.
		bad("max_message_bytes", "must be < 4 GiB")
	}
	if c.MaxBytesInFlight < 2*c.MaxMessageBytes {
		// The buffer doubles as it grows: a message of the largest size
		// holds up to twice its size for a moment, and must always fit.
		bad("max_bytes_in_flight", "must be at least twice smtp.max_message_bytes (%d)", 2*c.MaxMessageBytes)
	}
	if c.MaxRecipients <= 0 {
		bad("max_recipients", "must be > 0")
	}
	if c.MaxLineLength < minLineLength {
		bad("max_line_length", "must be >= %d (RFC 5321 4.5.3.1.6)", minLineLength)
	}
	for _, t := range []struct {
		key string
		d   time.Duration
	}{{"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}, {"publish_timeout", c.PublishTimeout},
		{"max_session_duration", c.MaxSessionDuration}, {"stress_timeout", c.StressTimeout}} {
		if t.d <= 0 {
			bad(t.key, "must be > 0")
		}
	}
	if _, err := parseProxySources(c.ProxyProtocolFrom); err != nil {
		bad("proxy_protocol_from", "%v", err)
	}
	if c.MaxMessagesPerClient < 0 {
		bad("max_messages_per_client", "must be >= 0 (0: no limit)")
	}
	if c.MaxMessagesPerNetwork < 0 {
		bad("max_messages_per_network", "must be >= 0 (0: no limit)")
	}
	if c.MinDataRate <= 0 {
		bad("min_data_rate", "must be > 0")
	}
	if c.MaxConnections <= 0 {
		bad("max_connections", "must be > 0")
	}
	if c.MaxConnectionsPerIP <= 0 || c.MaxConnectionsPerIP > c.MaxConnections {
		bad("max_connections_per_ip", "must be > 0 and <= smtp.max_connections")
	}
	if c.HighWatermark <= 0 || c.HighWatermark > 1 {
		bad("high_watermark", "must be a fill ratio in (0, 1], got %g", c.HighWatermark)
	}
	if c.LowWatermark <= 0 || c.LowWatermark >= c.HighWatermark {
		bad("low_watermark", "must be > 0 and < smtp.high_watermark")
	}
	return errors.Join(errs...)
}
