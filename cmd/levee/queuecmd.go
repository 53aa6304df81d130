package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/levee-mail/levee/internal/bytesize"
	"github.com/levee-mail/levee/internal/config"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
	"github.com/levee-mail/levee/web/opsclient"
	"github.com/levee-mail/levee/web/opsdoc"
)

const queueUsage = `Usage:
  levee queue status [--json] [--watch] [--interval 2s]
  levee queue limits [--json]
  levee queue limits set [--max-msgs N] [--max-bytes 20GiB] [--max-age 48h]
                         [--max-msg-size 10MiB] [--per-domain-max-msgs N|0] [--force]

Reaches Levee through its HTTP API (--server, default http://127.0.0.1:8025;
changes need --http-admin-token or LEVEE_HTTP_ADMIN_TOKEN, the server's own names) or straight through
JetStream (--nats-url nats://...).

Lowering max_msgs or max_bytes below what is queued deletes nothing: new mail
is deferred (452 4.3.1) until the workers drained below the limit. A change
that would make JetStream delete queued mail (max_age below the oldest
message's age, a per-domain cap below a domain's queued count) is refused
unless --force, which loses that mail. So is a max_msg_size below what a
running receiver accepts (smtp.max_message_bytes plus 64KiB): mail between
the two would bounce.
`

const dlqUsage = `Usage:
  levee dlq list [--after SEQ] [--limit 50] [--json]
  levee dlq show SEQ [--raw] [--json]
  levee dlq replay SEQ | --all
  levee dlq purge SEQ | --all

Dead letters are mail the workers gave up on, each with the reason. replay
puts a message back on the queue for the workers (it is stored exactly once);
purge deletes it for good. Reaches Levee like 'levee queue' (--server or
--nats-url; changes over HTTP need --http-admin-token or LEVEE_HTTP_ADMIN_TOKEN).
`

// opsFlags are the connection flags every queue and dlq command takes.
type opsFlags struct {
	server, natsURL string
	timeout         time.Duration

	// token is --http-admin-token; tokenSet says it was given. Without it
	// the environment is read (adminToken).
	token    string
	tokenSet bool
	environ  []string
	warn     io.Writer

	// nats is how --nats-url authenticates: the server's own keys
	// (--nats-creds, LEVEE_QUEUE_NATS_PASSWORD ...), read by natsSecurity.
	nats      natsAccess
	natsGiven map[string]string
}

// natsAccess holds the server's queue.nats_* security keys alone, so that
// the tools take them under the server's flag and environment names.
type natsAccess struct {
	Queue struct {
		queue.Security `config:",inline"`
	} `config:"queue"`
}

// The admin token's names are the server's (http.admin_token), so that one
// environment serves both sides; the client's old names still work.
const (
	adminTokenFlag           = "http-admin-token"
	adminTokenEnv            = "LEVEE_HTTP_ADMIN_TOKEN"
	deprecatedAdminTokenFlag = "admin-token"
	deprecatedAdminTokenEnv  = "LEVEE_ADMIN_TOKEN"
)

func (f *opsFlags) register(fs *flag.FlagSet, environ []string) {
	f.environ, f.warn = environ, fs.Output()
	fs.StringVar(&f.server, "server", "http://127.0.0.1:8025", "Levee HTTP address (its ops API)")
	fs.StringVar(&f.natsURL, "nats-url", "", "reach JetStream directly instead of --server (nats://host:port)")
	// No flag default: it would print the token from the environment in --help.
	fs.Func(adminTokenFlag, "the server's http.admin_token, for changes over HTTP (default $"+adminTokenEnv+", which the server reads too)", func(v string) error {
		f.token, f.tokenSet = v, true
		return nil
	})
	fs.Func(deprecatedAdminTokenFlag, "deprecated: --"+adminTokenFlag, func(v string) error {
		fmt.Fprintf(f.warn, "levee: --%s is deprecated, use --%s\n", deprecatedAdminTokenFlag, adminTokenFlag)
		f.token, f.tokenSet = v, true
		return nil
	})
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "time limit of each request")
	f.natsGiven = config.Flags(fs, &f.nats)
}

// natsSecurity is --nats-url's credentials and TLS: the flags, else the
// server's environment variables (LEVEE_QUEUE_NATS_*), so that one
// environment serves both sides.
func (f *opsFlags) natsSecurity() (queue.Security, error) {
	if f.natsURL == "" {
		for name := range f.natsGiven {
			return queue.Security{}, fmt.Errorf("--%s: only with --nats-url", strings.ReplaceAll(strings.TrimPrefix(name, "queue."), "_", "-"))
		}
		return queue.Security{}, nil
	}
	var env []string
	for _, kv := range f.environ {
		if strings.HasPrefix(kv, "LEVEE_QUEUE_NATS_") {
			env = append(env, kv)
		}
	}
	err := config.Load(&f.nats, config.Sources{Environ: env, Flags: f.natsGiven})
	return f.nats.Queue.Security, err
}

// adminToken is the flag's token, else the environment's.
func (f *opsFlags) adminToken() string {
	if f.tokenSet {
		return f.token
	}
	if v, ok := envLookup(f.environ, adminTokenEnv); ok {
		return v
	}
	if v, ok := envLookup(f.environ, deprecatedAdminTokenEnv); ok {
		fmt.Fprintf(f.warn, "levee: %s is deprecated, use %s\n", deprecatedAdminTokenEnv, adminTokenEnv)
		return v
	}
	return ""
}

func (f *opsFlags) client(rateWindow time.Duration) (opsclient.Client, error) {
	sec, err := f.natsSecurity()
	if err != nil {
		return nil, err
	}
	if f.natsURL != "" {
		return opsclient.NATS(f.natsURL, sec, rateWindow)
	}
	return opsclient.HTTP(f.server, f.adminToken())
}

func envLookup(environ []string, key string) (string, bool) {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// parseArgs parses flags wherever they are among the positional arguments
// (`levee dlq show 7 --raw`), which flag.Parse alone stops at.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// cliError prints err for a person and returns the exit code.
func cliError(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "levee %s: %v\n", cmd, err)
	return 1
}

func queueCmd(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, queueUsage)
		return 0
	}
	switch args[0] {
	case "status":
		return queueStatusCmd(args[1:], environ, stdout, stderr)
	case "limits":
		return queueLimitsCmd(args[1:], environ, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "levee queue: unknown command %q\n\n%s", args[0], queueUsage)
		return 2
	}
}

func queueStatusCmd(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("levee queue status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var of opsFlags
	of.register(fs, environ)
	asJSON := fs.Bool("json", false, "print the status as JSON (the /api/v1/queue document)")
	watch := fs.Bool("watch", false, "refresh every --interval until interrupted")
	interval := fs.Duration("interval", 2*time.Second, "refresh interval with --watch; with --nats-url also the window rates are measured over")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return usageError(fs, stderr, pos, err)
	}
	if *interval <= 0 {
		fmt.Fprintln(stderr, "levee queue status: --interval must be > 0")
		return 2
	}
	c, err := of.client(*interval)
	if err != nil {
		return cliError(stderr, "queue status", err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, of.timeout+*interval)
		st, err := c.Status(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0 // interrupted
			}
			if !*watch {
				return cliError(stderr, "queue status", err)
			}
			fmt.Fprintf(stderr, "levee queue status: %v\n", err)
		} else if *asJSON {
			if err := writeJSONLine(stdout, opsdoc.FromStatus(st)); err != nil {
				return cliError(stderr, "queue status", err)
			}
		} else {
			if *watch {
				fmt.Fprint(stdout, "\033[H\033[2J") // clear the terminal
			}
			printStatus(stdout, st)
		}
		if !*watch {
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(*interval):
		}
	}
}

func usageError(fs *flag.FlagSet, stderr io.Writer, pos []string, err error) int {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	default:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), pos[0])
	}
	return 2
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// printStatus is the status for a person: one figure per line, limits next
// to what uses them.
func printStatus(w io.Writer, st admin.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	where := "external JetStream"
	if st.Embedded {
		where = "embedded JetStream"
	}
	fmt.Fprintf(tw, "queue\t%s (%s, %d replica(s))\tat %s\n", st.Stream, where, st.Limits.Replicas, st.At.Local().Format("15:04:05"))
	fmt.Fprintf(tw, "messages\t%d of %d\t%.1f%% full\n", st.Messages, st.Limits.MaxMsgs, 100*st.Fill.Messages)
	fmt.Fprintf(tw, "bytes\t%s of %s\t%.1f%% full\n", bytesize.Human(st.Bytes), bytesize.Human(uint64(max(0, st.Limits.MaxBytes))), 100*st.Fill.Bytes)
	per := "none"
	if st.Limits.PerDomainMaxMsgs > 0 {
		per = fmt.Sprintf("%d messages per recipient domain", st.Limits.PerDomainMaxMsgs)
	}
	fmt.Fprintf(tw, "per-domain cap\t%s\t\n", per)
	fmt.Fprintf(tw, "max age\t%s\tmax message %s\n", st.Limits.MaxAge, bytesize.Human(uint64(max(0, st.Limits.MaxMsgSize))))
	fmt.Fprintf(tw, "oldest message\t%s\t\n", st.OldestMessageAge.Round(time.Second))
	c := st.Consumer
	fmt.Fprintf(tw, "consumer\t%s\tpending %d, ack pending %d, redelivered %d, waiting pulls %d\n", c.Name, c.NumPending, c.NumAckPending, c.NumRedelivered, c.NumWaiting)
	if st.Rates.WindowSeconds > 0 {
		fmt.Fprintf(tw, "rates\tingest %.1f/s, drain %.1f/s\tdeferrals %.1f/s (over %.0fs)\n", st.Rates.Ingest, st.Rates.Drain, st.Rates.Deferrals, st.Rates.WindowSeconds)
	} else {
		fmt.Fprintf(tw, "rates\tnot yet measured\t\n")
	}
	fmt.Fprintf(tw, "workers\t%d loops\tin %d process(es)\n", st.Workers.Concurrency, st.Workers.Processes)
	fmt.Fprintf(tw, "smtp\t%d session(s)\tin %d process(es); accepted %d, deferred %d, rejected %d since start\n",
		st.SMTP.Sessions, st.SMTP.Processes, st.SMTP.Accepted, st.SMTP.Deferred, st.SMTP.Rejected)
	fmt.Fprintf(tw, "dead letters\t%d\tin %s (levee dlq list)\n", st.DeadLetters, st.DeadStream)
	if len(st.Partitions) > 1 {
		fmt.Fprintf(tw, "partitions\t%d streams\t\n", len(st.Partitions))
		for _, p := range st.Partitions {
			note := ""
			if p.Draining {
				note = ", draining (another layout's)"
			}
			fmt.Fprintf(tw, "  %s\t%d messages, %s\t%.1f%% full, pending %d, ack pending %d%s\n",
				p.Stream, p.Messages, bytesize.Human(p.Bytes), 100*p.Fill.Max, p.NumPending, p.AckPending, note)
		}
	}
	if len(st.TopDomains) > 0 {
		fmt.Fprintf(tw, "top domains\t\t\n")
		for _, d := range st.TopDomains {
			fmt.Fprintf(tw, "  %s\t%d\t\n", d.Domain, d.Messages)
		}
	}
	tw.Flush()
}

func queueLimitsCmd(args, environ []string, stdout, stderr io.Writer) int {
	set := len(args) > 0 && args[0] == "set"
	if set {
		args = args[1:]
	}
	name := "levee queue limits"
	if set {
		name += " set"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var of opsFlags
	of.register(fs, environ)
	asJSON := fs.Bool("json", false, "print JSON")
	var raw struct{ maxMsgs, maxBytes, maxAge, maxMsgSize, perDomain string }
	force := false
	if set {
		fs.StringVar(&raw.maxMsgs, "max-msgs", "", "queued messages")
		fs.StringVar(&raw.maxBytes, "max-bytes", "", "queued bytes (20GiB, 512MiB, ...)")
		fs.StringVar(&raw.maxAge, "max-age", "", "age at which JetStream deletes queued mail (168h); must exceed the longest outage")
		fs.StringVar(&raw.maxMsgSize, "max-msg-size", "", "largest message (10MiB)")
		fs.StringVar(&raw.perDomain, "per-domain-max-msgs", "", "queued messages per recipient domain; 0 removes the cap")
		fs.BoolVar(&force, "force", false, "apply even when JetStream will delete queued mail because of it (that mail is lost), or receivers accept larger mail than max_msg_size (it bounces)")
	}
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return usageError(fs, stderr, pos, err)
	}
	var l admin.LimitsChange
	if set {
		var err error
		if l, err = limitsFromFlags(raw.maxMsgs, raw.maxBytes, raw.maxAge, raw.maxMsgSize, raw.perDomain); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 2
		}
		l.Force = force
	}
	c, err := of.client(0)
	if err != nil {
		return cliError(stderr, "queue limits", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), of.timeout)
	defer cancel()
	if !set {
		lim, err := c.Limits(ctx)
		if err != nil {
			return cliError(stderr, "queue limits", err)
		}
		if *asJSON {
			_ = writeJSONLine(stdout, opsdoc.FromLimitsReport(lim))
			return 0
		}
		printLimits(stdout, lim.StreamLimits)
		printDrift(stdout, lim)
		return 0
	}
	u, err := c.UpdateLimits(ctx, l)
	if err != nil {
		return cliError(stderr, "queue limits set", err)
	}
	if *asJSON {
		_ = writeJSONLine(stdout, opsdoc.FromLimitsUpdate(u))
		return 0
	}
	fmt.Fprintln(stdout, "limits changed; now:")
	printLimits(stdout, u.Limits)
	for _, n := range u.Notes {
		fmt.Fprintln(stdout, "note:", n)
	}
	fmt.Fprintln(stdout, "The change lives on the JetStream server and outlasts restarts: a start never changes an existing stream's limits.")
	fmt.Fprintln(stdout, "Put it in Levee's config too (`levee queue limits` shows where they differ), so that a recreated stream gets it.")
	return 0
}

func limitsFromFlags(maxMsgs, maxBytes, maxAge, maxMsgSize, perDomain string) (admin.LimitsChange, error) {
	var l admin.LimitsChange
	if maxMsgs != "" {
		n, err := strconv.ParseInt(maxMsgs, 10, 64)
		if err != nil || n < 1 {
			return l, fmt.Errorf("--max-msgs: want a positive number, got %q", maxMsgs)
		}
		l.MaxMsgs = n
	}
	if maxBytes != "" {
		n, err := bytesize.Parse(maxBytes)
		if err != nil || n < 1 {
			return l, fmt.Errorf("--max-bytes: want a size like 20GiB, got %q", maxBytes)
		}
		l.MaxBytes = n
	}
	if maxAge != "" {
		d, err := time.ParseDuration(maxAge)
		if err != nil || d <= 0 {
			return l, fmt.Errorf("--max-age: want a duration like 168h, got %q", maxAge)
		}
		l.MaxAge = d
	}
	if maxMsgSize != "" {
		n, err := bytesize.Parse(maxMsgSize)
		if err != nil || n < 1 || n > 1<<31-1 {
			return l, fmt.Errorf("--max-msg-size: want a size like 10MiB, got %q", maxMsgSize)
		}
		l.MaxMsgSize = int32(n)
	}
	if perDomain != "" {
		n, err := strconv.ParseInt(perDomain, 10, 64)
		if err != nil || n < 0 {
			return l, fmt.Errorf("--per-domain-max-msgs: want a number, 0 for no cap, got %q", perDomain)
		}
		l.PerDomainMaxMsgs = n
		if n == 0 {
			l.PerDomainMaxMsgs = -1
		}
	}
	if l == (admin.LimitsChange{}) {
		return l, errors.New("nothing to change: give one or more of --max-msgs, --max-bytes, --max-age, --max-msg-size, --per-domain-max-msgs")
	}
	return l, nil
}

// printDrift says how the live limits differ from the config of the Levee
// that answered (a start applies the config's only to a new stream).
func printDrift(w io.Writer, r admin.LimitsReport) {
	switch {
	case !r.ComparedWithConfig:
		fmt.Fprintln(w, "(reached through JetStream: not compared with a Levee config)")
	case len(r.Drift) == 0:
		fmt.Fprintln(w, "the live limits are the config's")
	default:
		fmt.Fprintln(w, "differs from the config of the Levee that answered (starts leave live limits alone):")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  limit\tlive\tconfig")
		for _, d := range r.Drift {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", d.Key, d.Live, d.Config)
		}
		tw.Flush()
	}
}

func printLimits(w io.Writer, l admin.StreamLimits) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	per := "none"
	if l.PerDomainMaxMsgs > 0 {
		per = strconv.FormatInt(l.PerDomainMaxMsgs, 10)
	}
	fmt.Fprintf(tw, "max_msgs\t%d\n", l.MaxMsgs)
	fmt.Fprintf(tw, "max_bytes\t%s (%d)\n", bytesize.Human(uint64(max(0, l.MaxBytes))), l.MaxBytes)
	fmt.Fprintf(tw, "max_age\t%s\n", l.MaxAge)
	fmt.Fprintf(tw, "max_msg_size\t%s\n", bytesize.Human(uint64(max(0, l.MaxMsgSize))))
	fmt.Fprintf(tw, "per_domain_max_msgs\t%s\n", per)
	fmt.Fprintf(tw, "discard\t%s\n", l.Discard)
	fmt.Fprintf(tw, "duplicate_window\t%s\n", l.DuplicateWindow)
	fmt.Fprintf(tw, "replicas\t%d\n", l.Replicas)
	tw.Flush()
}
