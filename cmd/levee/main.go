// Command levee runs the Levee inbound-mail pipeline and its tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/internal/config"
)

const usage = `Levee: inbound mail -> SMTP -> JetStream queue with limits -> workers -> mailbox storage.

Usage:
  levee serve [flags]    run every role in one process (embedded JetStream and SQLite by default)
  levee smtpd [flags]    run only the SMTP receiver, against an external JetStream (--nats-url)
  levee worker [flags]   run only the workers, draining an external JetStream into the store
  levee web [flags]      run only the mailbox API, reading the store
  levee loadtest [flags] replay a traffic shape at an SMTP server and audit delivery (see docs/loadtesting.md)
  levee queue status|limits [set ...]   watch the queue, change its limits live ('levee queue help')
  levee dlq list|show|replay|purge      dead letters, with the reason each was given up on ('levee dlq help')
  levee help             show this help and the role commands' flags

serve, smtpd, worker and web take the same flags (one configuration for
every role), listed below and by 'levee serve --help' with their defaults and
environment variables. The tools have their own: 'levee loadtest --help',
'levee queue help', 'levee dlq help'.
Every process serves /metrics, /healthz and /readyz on --http-addr.
`

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(app.RoleAll, args[1:], environ, stderr)
	case "smtpd":
		return serve(app.RoleSMTP, args[1:], environ, stderr)
	case "worker":
		return serve(app.RoleWorker, args[1:], environ, stderr)
	case "web":
		return serve(app.RoleWeb, args[1:], environ, stderr)
	case "loadtest":
		return loadtestCmd(args[1:], stdout, stderr)
	case "queue":
		return queueCmd(args[1:], environ, stdout, stderr)
	case "dlq":
		return dlqCmd(args[1:], environ, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		fmt.Fprintln(stdout, "\nFlags of serve, smtpd, worker and web (each also a LEVEE_* environment variable and a YAML key):")
		cfg := app.DefaultConfig()
		newServeFlags("levee serve", stdout, &cfg).PrintDefaults()
		return 0
	default:
		fmt.Fprintf(stderr, "levee: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// serveFlags are the flags of the role commands: --config, and one flag
// per configuration key of cfg (internal/config), whose given values end
// up in given.
type serveFlags struct {
	*flag.FlagSet
	file  *string
	given map[string]string
}

func newServeFlags(name string, out io.Writer, cfg *app.Config) serveFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	file := fs.String("config", "", "path to a YAML config file (env LEVEE_CONFIG)")
	return serveFlags{FlagSet: fs, file: file, given: config.Flags(fs, cfg)}
}

// loadConfig is the configuration of a role command: the defaults, then
// the YAML file (--config or LEVEE_CONFIG), then LEVEE_* environment
// variables, then flags. Any invalid value fails naming its key.
func loadConfig(name string, out io.Writer, args, environ []string) (app.Config, error) {
	cfg := app.DefaultConfig()
	fs := newServeFlags(name, out, &cfg)
	if err := parseFlags(fs.FlagSet, args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	err := config.Load(&cfg, config.Sources{File: *fs.file, Environ: environ, Flags: fs.given})
	return cfg, err
}

// serve runs the given roles until SIGINT or SIGTERM, then drains.
func serve(roles app.Role, args, environ []string, stderr io.Writer) int {
	name := "levee " + roles.String()
	if roles == app.RoleAll {
		name = "levee serve"
	}
	cfg, err := loadConfig(name, stderr, args, environ)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	l, err := app.Start(ctx, cfg, roles, log)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	<-ctx.Done()
	stop() // a second signal kills the process the usual way
	log.Info("shutting down: no new mail accepted, draining", "deadline", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := l.Shutdown(sctx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// parseFlags parses args without the flag package's own printing: --help
// shows fs.Usage (and returns flag.ErrHelp); a bad flag is returned with a
// one-line hint for the caller to print, instead of the error followed by
// every flag.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		} else {
			fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
			fs.PrintDefaults()
		}
		return err
	case err != nil:
		return fmt.Errorf("%w (run '%s --help' for its flags)", err, fs.Name())
	}
	return nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
