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
	var seq uint64
	switch {
	case cmd == "list" && len(pos) > 0:
		return usageError(fs, stderr, pos, nil)
	case cmd == "show" && len(pos) != 1,
		(cmd == "replay" || cmd == "purge") && (len(pos) == 1) == *all:
		fmt.Fprintf(stderr, "levee dlq %s: give one dead letter's sequence number (levee dlq list shows them)", cmd)
		if cmd != "show" {
			fmt.Fprint(stderr, ", or --all")
		}
		fmt.Fprintln(stderr)
		return 2
	case len(pos) == 1:
		if seq, err = strconv.ParseUint(pos[0], 10, 64); err != nil || seq == 0 {
			fmt.Fprintf(stderr, "levee dlq %s: %q is not a dead letter's sequence number\n", cmd, pos[0])
			return 2
		}
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
	fail := func(err error) int { return cliError(stderr, "dlq "+cmd, err) }

	switch {
	case cmd == "list":
		list, total, err := c.DeadLetters(ctx, *after, *limit)
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			_ = writeJSONLine(stdout, map[string]any{"dead_letters": list, "total": total})
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tDEAD AT\tDELIVERIES\tTO\tREASON")
		for _, d := range list {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", d.Seq, d.DeadAt.Local().Format(time.DateTime), d.Deliveries, strings.Join(d.To, ","), oneLine(d.Reason, 100))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d shown, %d dead letters in all\n", len(list), total)
	case cmd == "show":
		d, raw, err := c.DeadLetter(ctx, seq)
		if err != nil {
			return fail(err)
		}
		switch {
		case *rawOut:
			_, _ = stdout.Write(raw)
		case *asJSON:
			_ = writeJSONLine(stdout, d)
		default:
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "seq\t%d\nid\t%s\nreason\t%s\ndead at\t%s\ndeliveries\t%d\n", d.Seq, d.ID, d.Reason, d.DeadAt.Local().Format(time.RFC3339), d.Deliveries)
			fmt.Fprintf(tw, "from\t%s\nto\t%s\nreceived at\t%s\nsize\t%s\n", d.From, strings.Join(d.To, ", "), d.ReceivedAt.Local().Format(time.RFC3339), bytesize.Human(uint64(d.Size)))
			fmt.Fprintf(tw, "was\t%s seq %d, subject %s\n", d.OriginalStream, d.OriginalSeq, d.Subject)
			tw.Flush()
			fmt.Fprintf(stdout, "\n%s\n", headerBlock(raw, 40))
		}
	case cmd == "replay" && *all:
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
	case cmd == "purge" && *all:
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
