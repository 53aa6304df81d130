package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/levee-mail/levee/loadtest"
)

const loadtestUsage = `Usage: levee loadtest [--target HOST:PORT] [--api URL] SCHEDULE [flags]

Replays a traffic burst at an SMTP server (Levee or any other), retrying 4xx
like an MTA, then audits through Levee's API that every accepted message was
stored exactly once. See docs/loadtesting.md.

SCHEDULE is one of:
  --rate 200/s --duration 5m                          constant rate
  --ramp 10/s..500/s --duration 10m                   linear ramp
  --baseline 200/s --surge 10x --surge-for 2m         burst (baseline, surge, baseline;
                                                      --duration defaults to 3x --surge-for)
  --trace arrivals.jsonl [--speed 10]                 replay a recorded trace

Exit status: 0 all thresholds passed, 1 a threshold failed, 2 bad flags,
3 the run could not start or broke.

Flags:
`

// readTokenEnv is the server's name for http.read_token, so that one
// environment serves both sides.
const readTokenEnv = "LEVEE_HTTP_READ_TOKEN"

// loadtestOpts is the command line before it becomes a loadtest.Config.
type loadtestOpts struct {
	cfg                                            loadtest.Config
	rate, ramp, baseline, surge                    string
	duration, surgeAt, surgeFor, surgeRamp         time.Duration
	count                                          int
	poisson                                        bool
	trace                                          string
	speed                                          float64
	corpus                                         string
	corpusMax                                      string
	size                                           string
	attachments                                    float64
	insecure                                       bool
	jsonPath, reportPath, progress                 string
	th                                             loadtest.Thresholds
	maxReaderP99, maxSMTPP99                       time.Duration
	maxLost, maxDuplicates, maxFailed, maxLate     int64
	noAudit                                        bool
	retryInitial, retryMax, retryFor, auditTimeout time.Duration
	lateAfter, drainTimeout, readerThink, interval time.Duration
	commandTimeout                                 time.Duration
	seed                                           uint64
	retryMultiplier                                float64
	readers, connections, mailboxes, perConnection int
	target, api, to, from, helo, runID             string
	apiToken                                       string
	noPipelining, starttls                         bool
}

func loadtestFlags(o *loadtestOpts, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("levee loadtest", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, loadtestUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.target, "target", "127.0.0.1:2525", "SMTP server to load, host:port")
	fs.StringVar(&o.api, "api", "", "Levee's HTTP base URL (http://127.0.0.1:8025) for the audit, the reader probe and the queue figures; empty: SMTP only")
	// No default shown: the environment's token must not appear in --help.
	fs.StringVar(&o.apiToken, "api-token", "", "bearer token for --api, the server's http.read_token or http.admin_token (default $"+readTokenEnv+", which the server reads too)")
	fs.StringVar(&o.to, "to", loadtest.DefaultTo, "recipient address; {n} is replaced by 0..--mailboxes-1, spreading mail over that many mailboxes")
	fs.StringVar(&o.from, "from", loadtest.DefaultFrom, "envelope sender")
	fs.IntVar(&o.mailboxes, "mailboxes", loadtest.DefaultMailboxes, "how many mailboxes {n} in --to spreads over")

	fs.StringVar(&o.rate, "rate", "", "constant arrival rate, like 200/s, 12000/m")
	fs.StringVar(&o.ramp, "ramp", "", "linear ramp FROM..TO, like 10/s..500/s")
	fs.StringVar(&o.baseline, "baseline", "", "burst: the rate before and after the surge")
	fs.StringVar(&o.surge, "surge", "10x", "burst: the surge rate, a multiple of --baseline (10x) or a rate (2000/s)")
	fs.DurationVar(&o.surgeFor, "surge-for", 0, "burst: how long the surge lasts")
	fs.DurationVar(&o.surgeAt, "surge-at", 0, "burst: when the surge starts (default: centred in --duration)")
	fs.DurationVar(&o.surgeRamp, "surge-ramp", 0, "burst: time to climb to the surge rate and to fall back (within --surge-for)")
	fs.DurationVar(&o.duration, "duration", 0, "length of the schedule (constant and ramp default 1m, or --count/--rate; burst 3x --surge-for)")
	fs.IntVar(&o.count, "count", 0, "stop after this many arrivals (0: no limit)")
	fs.BoolVar(&o.poisson, "poisson", false, "Poisson arrivals (exponential gaps, like independent senders) instead of evenly spaced ones")
	fs.StringVar(&o.trace, "trace", "", "replay a trace: JSON lines of {\"offset\": seconds, \"size\": bytes, \"recipients\": n, \"domain\": \"...\"}")
	fs.Float64Var(&o.speed, "speed", 1, "trace speed-up: 10 replays ten times faster than recorded")
	fs.Uint64Var(&o.seed, "seed", 1, "seed for sizes, attachments, Poisson gaps and reader choices")

	fs.StringVar(&o.corpus, "corpus", "", "send real messages: a directory of .eml files, an mbox file or a Maildir (default: generated messages)")
	fs.StringVar(&o.corpusMax, "corpus-max-bytes", "512MiB", "largest corpus held in memory")
	fs.StringVar(&o.size, "size", "4KiB", "generated message size: 4KiB, uniform:1KiB-64KiB or lognormal:8KiB,1.0")
	fs.Float64Var(&o.attachments, "attachments", 0, "fraction (0..1) of generated messages with a binary attachment")

	fs.IntVar(&o.connections, "connections", loadtest.DefaultConnections, "SMTP sessions open at most (the pool)")
	fs.BoolVar(&o.noPipelining, "no-pipelining", false, "one command per round trip even when the server offers PIPELINING")
	fs.BoolVar(&o.starttls, "starttls", false, "upgrade every session with STARTTLS (the server must offer it)")
	fs.BoolVar(&o.insecure, "tls-insecure-skip-verify", false, "with --starttls: accept any certificate (test servers)")
	fs.StringVar(&o.helo, "helo", loadtest.DefaultHelo, "name said in EHLO")
	fs.IntVar(&o.perConnection, "messages-per-connection", 0, "close a session after this many messages (0: reuse without limit)")
	fs.DurationVar(&o.commandTimeout, "command-timeout", 5*time.Minute, "how long to wait for any one SMTP reply")

	fs.DurationVar(&o.retryInitial, "retry-initial", time.Second, "wait before retrying a deferred (4xx) message; doubles after each deferral")
	fs.DurationVar(&o.retryMax, "retry-max", 5*time.Minute, "longest wait between retries")
	fs.Float64Var(&o.retryMultiplier, "retry-multiplier", 2, "backoff growth per deferral")
	fs.DurationVar(&o.retryFor, "retry-for", time.Hour, "give a message up (expired) when still deferred this long after its arrival")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Minute, "after the last arrival, how long the backlog and retries may still be sent")

	fs.IntVar(&o.readers, "readers", 2, "reader-probe loops calling the mailbox API like a web app (needs --api; 0: none)")
	fs.DurationVar(&o.readerThink, "reader-think", 100*time.Millisecond, "pause between a reader's page views")
	fs.BoolVar(&o.noAudit, "no-audit", false, "skip the delivery audit even with --api")
	fs.DurationVar(&o.auditTimeout, "audit-timeout", 5*time.Minute, "how long the audit waits for every accepted message to be stored (then: lost)")
	fs.DurationVar(&o.lateAfter, "late-after", time.Minute, "a message stored more than this after its 250 counts as late")
	fs.DurationVar(&o.interval, "interval", 0, "time-series resolution (default: about 120 points over the schedule)")

	fs.StringVar(&o.jsonPath, "json", "", "write the JSON result to this file")
	fs.StringVar(&o.reportPath, "report", "", "write the HTML report with plots to this file")
	fs.StringVar(&o.progress, "progress", "auto", "progress line on stderr: auto (live on a terminal), always, never")
	fs.StringVar(&o.runID, "run-id", "", "id in every Message-ID (default: time and random)")

	fs.Int64Var(&o.maxLost, "max-lost", -1, "fail (exit 1) if more accepted messages than this are lost (-1: no check)")
	fs.Int64Var(&o.maxDuplicates, "max-duplicates", -1, "fail if more messages than this are stored twice (-1: no check)")
	fs.Int64Var(&o.maxFailed, "max-failed", -1, "fail if more messages than this got a 5xx (-1: no check)")
	fs.Int64Var(&o.maxLate, "max-late", -1, "fail if more messages than this are late, see --late-after (-1: no check)")
	fs.DurationVar(&o.maxReaderP99, "max-reader-p99", 0, "fail if the reader p99 of any phase is above this (0: no check)")
	fs.DurationVar(&o.maxSMTPP99, "max-smtp-p99", 0, "fail if arrival -> 250 p99 is above this (0: no check)")
	return fs
}

// buildLoadtest turns the flags into a Config; every error names a flag.
func buildLoadtest(o *loadtestOpts, set map[string]bool) (loadtest.Config, func(), error) {
	cleanup := func() {}
	c := loadtest.Config{
		Target: o.target, API: strings.TrimRight(o.api, "/"), APIToken: o.apiToken, From: o.from, To: o.to, Mailboxes: o.mailboxes,
		Connections: o.connections, NoPipelining: o.noPipelining, StartTLS: o.starttls, Helo: o.helo,
		MessagesPerConnection: o.perConnection, CommandTimeout: o.commandTimeout,
		Retry:        loadtest.RetryPolicy{Initial: o.retryInitial, Max: o.retryMax, Multiplier: o.retryMultiplier, GiveUpAfter: o.retryFor},
		DrainTimeout: o.drainTimeout, ReaderThink: o.readerThink, Interval: o.interval,
		Audit: loadtest.AuditConfig{Disabled: o.noAudit, Timeout: o.auditTimeout, LateAfter: o.lateAfter},
		RunID: o.runID, Seed: o.seed,
	}
	if o.api != "" {
		c.Readers = o.readers
	}
	if o.drainTimeout == 0 {
		c.DrainTimeout = time.Nanosecond // "0": stop at the last arrival
	}
	if o.starttls {
		c.TLS = &tls.Config{InsecureSkipVerify: o.insecure} // opt-in, for test certificates
	}
	var err error
	if c.Schedule, cleanup, err = o.schedule(set); err != nil {
		return c, cleanup, err
	}
	if c.Source, err = o.source(&c.RunID); err != nil {
		return c, cleanup, err
	}
	o.th = loadtest.Thresholds{MaxLost: o.maxLost, MaxDuplicates: o.maxDuplicates, MaxFailed: o.maxFailed,
		MaxLate: o.maxLate, MaxReaderP99: o.maxReaderP99, MaxSMTPP99: o.maxSMTPP99}
	if (o.th.NeedsAudit() || o.maxReaderP99 > 0) && (o.api == "" || o.noAudit && o.th.NeedsAudit()) {
		return c, cleanup, errors.New("--max-lost, --max-duplicates, --max-late and --max-reader-p99 need --api (and the audit)")
	}
	switch o.progress {
	case "auto", "always", "never":
	default:
		return c, cleanup, fmt.Errorf("--progress: want auto, always or never, got %q", o.progress)
	}
	c = c.WithDefaults()
	return c, cleanup, c.Validate()
}

// schedule is the arrival schedule the flags ask for: exactly one of
// --rate, --ramp, --baseline (a burst) or --trace. cleanup closes a trace.
func (o *loadtestOpts) schedule(set map[string]bool) (sched loadtest.Schedule, cleanup func(), err error) {
	cleanup = func() {}
	opts := loadtest.ArrivalOptions{Poisson: o.poisson, Seed: o.seed, Count: o.count}
	var kinds []string
	for _, k := range []string{"rate", "ramp", "baseline", "trace"} {
		if set[k] {
			kinds = append(kinds, "--"+k)
		}
	}
	if len(kinds) != 1 {
		return nil, cleanup, fmt.Errorf("give exactly one schedule: --rate, --ramp, --baseline (with --surge, --surge-for) or --trace; got %d (%s)", len(kinds), strings.Join(kinds, ", "))
	}
	switch {
	case set["rate"]:
		r, err := loadtest.ParseRate(o.rate)
		if err != nil {
			return nil, cleanup, fmt.Errorf("--rate: %w", err)
		}
		sched, err = loadtest.Constant(r, o.durationAt(r), opts)
		return sched, cleanup, err
	case set["ramp"]:
		from, to, ok := strings.Cut(o.ramp, "..")
		if !ok {
			return nil, cleanup, fmt.Errorf("--ramp: want FROM..TO, like 10/s..500/s, got %q", o.ramp)
		}
		a, err1 := loadtest.ParseRate(from)
		b, err2 := loadtest.ParseRate(to)
		if err := errors.Join(err1, err2); err != nil {
			return nil, cleanup, fmt.Errorf("--ramp: %w", err)
		}
		sched, err = loadtest.Ramp(a, b, o.durationAt((a+b)/2), opts)
		return sched, cleanup, err
	case set["baseline"]:
		base, err := loadtest.ParseRate(o.baseline)
		if err != nil {
			return nil, cleanup, fmt.Errorf("--baseline: %w", err)
		}
		surge, err := loadtest.ParseSurge(o.surge, base)
		if err != nil {
			return nil, cleanup, fmt.Errorf("--surge: %w", err)
		}
		sched, err = loadtest.Burst(loadtest.BurstSpec{Baseline: base, Surge: surge, SurgeAt: o.surgeAt,
			SurgeFor: o.surgeFor, SurgeRamp: o.surgeRamp, Duration: o.duration}, opts)
		return sched, cleanup, err
	}
	sched, err = loadtest.OpenTrace(o.trace, o.speed, opts)
	if err == nil {
		closer := sched.(io.Closer)
		cleanup = func() { _ = closer.Close() }
	}
	return sched, cleanup, err
}

// durationAt is the schedule's length at an average rate: --duration, or
// what --count takes at that rate, or a minute.
func (o *loadtestOpts) durationAt(rate float64) time.Duration {
	switch {
	case o.duration > 0:
		return o.duration
	case o.count > 0 && rate > 0:
		return time.Duration(float64(o.count)/rate*float64(time.Second)) + time.Millisecond
	default:
		return time.Minute
	}
}

// source is where the messages come from: a corpus of real mail, or
// generated ones (which carry the run id, set here if none was given).
func (o *loadtestOpts) source(runID *string) (loadtest.Source, error) {
	if o.corpus != "" {
		maxBytes, err := loadtest.ParseSize(o.corpusMax)
		if err != nil {
			return nil, fmt.Errorf("--corpus-max-bytes: %w", err)
		}
		return loadtest.OpenCorpus(o.corpus, int64(maxBytes))
	}
	sizes, err := loadtest.ParseSizeDist(o.size)
	if err != nil {
		return nil, fmt.Errorf("--size: %w", err)
	}
	if *runID == "" {
		*runID = loadtest.NewRunID() // the generator puts it in subjects
	}
	return loadtest.NewGenerator(sizes.Capped(64<<20), o.attachments, o.seed, *runID)
}

// loadtestCmd is `levee loadtest`.
func loadtestCmd(args []string, stdout, stderr io.Writer) int {
	var o loadtestOpts
	fs := loadtestFlags(&o, stderr)
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "levee loadtest: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "levee loadtest: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["api-token"] {
		o.apiToken = os.Getenv(readTokenEnv)
	}
	cfg, cleanup, err := buildLoadtest(&o, set)
	defer cleanup()
	if err != nil {
		fmt.Fprintf(stderr, "levee loadtest: %v\n", err)
		return 2
	}
	live := isTerminal(stderr)
	if o.progress == "always" || (o.progress == "auto" && live) {
		cfg.Progress, cfg.ProgressLive = stderr, live
	}
	if cfg.API == "" {
		fmt.Fprintln(stderr, "levee loadtest: no --api: SMTP only, without the audit, the reader probe and the queue figures")
	}

	// The first Ctrl-C stops the load and still audits what was accepted;
	// the second one ends the process the usual way.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	res, err := loadtest.Run(ctx, cfg)
	if res == nil {
		fmt.Fprintf(stderr, "levee loadtest: %v\n", err)
		return 3
	}
	o.th.Check(res)
	if werr := res.WriteSummary(stdout); werr != nil {
		fmt.Fprintf(stderr, "levee loadtest: %v\n", werr)
	}
	code := 0
	if !res.Pass {
		code = 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "levee loadtest: %v\n", err)
		code = 3
	}
	if o.jsonPath != "" {
		if err := res.WriteJSON(o.jsonPath); err != nil {
			fmt.Fprintf(stderr, "levee loadtest: %v\n", err)
			code = 3
		}
	}
	if o.reportPath != "" {
		if err := res.WriteReport(o.reportPath); err != nil {
			fmt.Fprintf(stderr, "levee loadtest: %v\n", err)
			code = 3
		}
	}
	return code
}

// isTerminal tells whether w is a character device (a terminal), where the
// progress line can rewrite itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
