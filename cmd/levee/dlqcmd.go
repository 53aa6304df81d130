package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/levee-mail/levee/internal/bytesize"
	"github.com/levee-mail/levee/queue/admin"
	"github.com/levee-mail/levee/web/opsclient"
)

func dlqCmd(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, dlqUsage)
		return 0
	}
	cmd := args[0]
	switch cmd {
	case "list", "show", "replay", "purge":
	default:
		fmt.Fprintf(stderr, "levee dlq: unknown command %q\n\n%s", cmd, dlqUsage)
		return 2
	}
	fs := flag.NewFlagSet("levee dlq "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var of opsFlags
	of.register(fs, environ)
	asJSON := fs.Bool("json", false, "print JSON")
	after := fs.Uint64("after", 0, "list: dead letters after this sequence (for paging)")
	limit := fs.Int("limit", 50, "list: at most this many")
	rawOut := fs.Bool("raw", false, "show: print the message exactly as received")
	all := fs.Bool("all", false, "replay or purge: every dead letter")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return usageError(fs, stderr, nil, err)
	}
	if cmd == "list" && len(pos) > 0 {
		return usageError(fs, stderr, pos, nil)
	}
	seq, code := dlqTarget(cmd, pos, *all, stderr)
	if code != 0 {
		return code
	}
	c, err := of.client(0)
	if err != nil {
		return cliError(stderr, "dlq "+cmd, err)
	}
	defer c.Close()
	timeout := of.timeout
	if *all && cmd == "replay" {
		// A replay of thousands takes its time, and each step is safe to
		// repeat: no deadline that would cut it off halfway.
		timeout = 24 * time.Hour
	}
	if *limit < 1 || *limit > 1000 {
		fmt.Fprintln(stderr, "levee dlq list: --limit must be 1..1000")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req := dlqRequest{cmd: cmd, seq: seq, all: *all, asJSON: *asJSON, raw: *rawOut, after: *after, limit: *limit}
	return req.run(ctx, c, stdout, stderr)
}

// dlqTarget reads the dead letter a show, replay or purge names: one
// sequence number, or none with --all (replay, purge). A bad one is exit
// code 2, with the reason on stderr.
func dlqTarget(cmd string, pos []string, all bool, stderr io.Writer) (seq uint64, code int) {
	switch {
	case cmd == "show" && len(pos) != 1,
		(cmd == "replay" || cmd == "purge") && (len(pos) == 1) == all:
		fmt.Fprintf(stderr, "levee dlq %s: give one dead letter's sequence number (levee dlq list shows them)", cmd)
		if cmd != "show" {
			fmt.Fprint(stderr, ", or --all")
		}
		fmt.Fprintln(stderr)
		return 0, 2
	case len(pos) == 1:
		seq, err := strconv.ParseUint(pos[0], 10, 64)
		if err != nil || seq == 0 {
			fmt.Fprintf(stderr, "levee dlq %s: %q is not a dead letter's sequence number\n", cmd, pos[0])
			return 0, 2
		}
		return seq, 0
	}
	return 0, 0
}

// dlqRequest is one `levee dlq` command, parsed.
type dlqRequest struct {
	cmd              string
	seq              uint64
	all, asJSON, raw bool
	after            uint64
	limit            int
}

// run carries the request out through c and prints the outcome.
func (r dlqRequest) run(ctx context.Context, c opsclient.Client, stdout, stderr io.Writer) int {
	cmd, seq := r.cmd, r.seq
	fail := func(err error) int { return cliError(stderr, "dlq "+cmd, err) }
	switch {
	case cmd == "list":
		list, total, err := c.DeadLetters(ctx, r.after, r.limit)
		if err != nil {
			return fail(err)
		}
		printDeadLetters(stdout, list, total, r.asJSON)
	case cmd == "show":
		d, raw, err := c.DeadLetter(ctx, seq)
		if err != nil {
			return fail(err)
		}
		switch {
		case r.raw:
			_, _ = stdout.Write(raw)
		case r.asJSON:
			_ = writeJSONLine(stdout, d)
		default:
			printDeadLetter(stdout, d, raw)
		}
	case cmd == "replay" && r.all:
		n, err := c.ReplayAll(ctx)
		if err != nil {
			if !errors.As(err, new(*opsclient.APIError)) { // the server's message says how many
				err = fmt.Errorf("%d replayed, then: %w", n, err)
			}
			return cliError(stderr, "dlq replay", err)
		}
		fmt.Fprintf(stdout, "%d dead letters replayed\n", n)
	case cmd == "replay":
		if err := c.Replay(ctx, seq); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "dead letter %d replayed: queued again for the workers\n", seq)
	case cmd == "purge" && r.all:
		n, err := c.PurgeAll(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "%d dead letters purged\n", n)
	case cmd == "purge":
		if err := c.Purge(ctx, seq); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "dead letter %d purged\n", seq)
	}
	return 0
}

// printDeadLetters is a page of dead letters, one a line.
func printDeadLetters(w io.Writer, list []admin.DeadLetterInfo, total uint64, asJSON bool) {
	if asJSON {
		_ = writeJSONLine(w, map[string]any{"dead_letters": list, "total": total})
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tDEAD AT\tDELIVERIES\tTO\tREASON")
	for _, d := range list {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", d.Seq, d.DeadAt.Local().Format(time.DateTime), d.Deliveries, strings.Join(d.To, ","), oneLine(d.Reason, 100))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d shown, %d dead letters in all\n", len(list), total)
}

// printDeadLetter is one dead letter for a person: what is known of it,
// then its header.
func printDeadLetter(w io.Writer, d admin.DeadLetterInfo, raw []byte) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "seq\t%d\nid\t%s\nreason\t%s\ndead at\t%s\ndeliveries\t%d\n", d.Seq, d.ID, d.Reason, d.DeadAt.Local().Format(time.RFC3339), d.Deliveries)
	fmt.Fprintf(tw, "from\t%s\nto\t%s\nreceived at\t%s\nsize\t%s\n", d.From, strings.Join(d.To, ", "), d.ReceivedAt.Local().Format(time.RFC3339), bytesize.Human(uint64(d.Size)))
	fmt.Fprintf(tw, "was\t%s seq %d, subject %s\n", d.OriginalStream, d.OriginalSeq, d.Subject)
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n", headerBlock(raw, 40))
}

// oneLine keeps a reason to one line of at most n runes for the table.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// headerBlock is the message's header (at most n lines), which is what an
// operator needs to recognise it; --raw prints all of it.
func headerBlock(raw []byte, n int) string {
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	lines := strings.Split(strings.ReplaceAll(head, "\r\n", "\n"), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d more header lines; --raw shows the whole message)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}
