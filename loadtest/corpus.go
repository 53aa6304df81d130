package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Corpus replays real messages: every arrival takes the next message in
// turn. Each is kept in memory ready for DATA (CRLF line ends, dot-stuffed)
// with its Message-ID, X-Levee-Loadtest-Id and Date removed, because every
// send carries fresh ones. The arrival's size is ignored: a corpus message
// is sent as it is.
type Corpus struct {
	path string
	kind string
	msgs [][]byte
	size int64
}

// DefaultCorpusMaxBytes bounds the corpus held in memory.
const DefaultCorpusMaxBytes = 512 << 20

// ErrCorpusTooLarge is returned when a corpus exceeds its byte limit.
var ErrCorpusTooLarge = errors.New("loadtest: corpus too large")

// OpenCorpus reads a corpus, telling its kind from what path is: a Maildir
// (a directory with cur/ or new/), a directory of .eml files (searched
// recursively), an mbox file (starting with a "From " line), or a single
// message file. maxBytes bounds the total (0: DefaultCorpusMaxBytes).
func OpenCorpus(path string, maxBytes int64) (*Corpus, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultCorpusMaxBytes
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: corpus: %w", err)
	}
	c := &Corpus{path: path}
	add := func(raw []byte) error {
		m := prepareMessage(raw)
		if len(m) == 0 {
			return nil
		}
		c.size += int64(len(m))
		if c.size > maxBytes {
			return fmt.Errorf("%w: %s holds more than %d bytes (--corpus-max-bytes)", ErrCorpusTooLarge, path, maxBytes)
		}
		c.msgs = append(c.msgs, m)
		return nil
	}
	switch {
	case st.IsDir() && (isDir(filepath.Join(path, "cur")) || isDir(filepath.Join(path, "new"))):
		c.kind = "Maildir"
		err = readMaildir(path, add)
	case st.IsDir():
		c.kind = ".eml directory"
		err = readEMLDir(path, add)
	default:
		c.kind = "mbox"
		err = readMbox(path, add)
	}
	if err != nil {
		return nil, err
	}
	if len(c.msgs) == 0 {
		return nil, fmt.Errorf("loadtest: corpus %s (%s): no messages", path, c.kind)
	}
	return c, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func readFiles(paths []string, add func([]byte) error) error {
	slices.Sort(paths)
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("loadtest: corpus: %w", err)
		}
		if err := add(raw); err != nil {
			return err
		}
	}
	return nil
}

// readMaildir reads cur/ and new/; tmp/ holds messages still being written.
func readMaildir(dir string, add func([]byte) error) error {
	var paths []string
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("loadtest: corpus: %w", err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
				paths = append(paths, filepath.Join(dir, sub, e.Name()))
			}
		}
	}
	return readFiles(paths, add)
}

func readEMLDir(dir string, add func([]byte) error) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.EqualFold(filepath.Ext(p), ".eml") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("loadtest: corpus: %w", err)
	}
	return readFiles(paths, add)
}

// readMbox splits an mbox at its "From " separator lines and undoes the
// mboxrd quoting of body lines (">From " -> "From ", ">>From " -> ">From ").
// A file that does not start with "From " is one message.
func readMbox(path string, add func([]byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("loadtest: corpus: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	first, err := r.Peek(5)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("loadtest: corpus: %w", err)
	}
	if string(first) != "From " {
		raw, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("loadtest: corpus: %w", err)
		}
		return add(raw)
	}
	var cur []byte
	started := false
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			switch {
			case bytes.HasPrefix(line, []byte("From ")):
				if started {
					if err := add(cur); err != nil {
						return err
					}
				}
				cur, started = cur[:0:0], true
			case isQuotedFrom(line):
				cur = append(cur, line[1:]...)
			default:
				cur = append(cur, line...)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("loadtest: corpus: %w", err)
		}
	}
	if started {
		return add(cur)
	}
	return nil
}

func isQuotedFrom(line []byte) bool {
	t := bytes.TrimLeft(line, ">")
	return len(t) < len(line) && bytes.HasPrefix(t, []byte("From "))
}

// dropped are the header fields every send replaces.
var dropped = []string{"message-id", "x-levee-loadtest-id", "date"}

// prepareMessage normalises line ends to CRLF, removes the header fields in
// dropped (with their continuation lines), dot-stuffs and ends in CRLF. An
// mbox separator's trailing blank line is trimmed.
func prepareMessage(raw []byte) []byte {
	raw = bytes.TrimRight(raw, "\r\n")
	if len(raw) == 0 {
		return nil
	}
	out := make([]byte, 0, len(raw)+len(raw)/40+2)
	inHeader, skipping := true, false
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if inHeader {
			switch {
			case len(line) == 0:
				inHeader, skipping = false, false
			case line[0] == ' ' || line[0] == '\t':
				if skipping {
					continue
				}
			default:
				name, _, _ := bytes.Cut(line, []byte(":"))
				skipping = slices.Contains(dropped, strings.ToLower(strings.TrimSpace(string(name))))
				if skipping {
					continue
				}
			}
		}
		if len(line) > 0 && line[0] == '.' {
			out = append(out, '.')
		}
		out = append(out, line...)
		out = append(out, '\r', '\n')
	}
	return out
}

// Len is the number of messages.
func (c *Corpus) Len() int { return len(c.msgs) }

func (c *Corpus) String() string {
	return fmt.Sprintf("corpus %s (%s, %d messages, %d bytes)", c.path, c.kind, len(c.msgs), c.size)
}

// Compose returns corpus message seq mod Len after the load tester's header.
func (c *Corpus) Compose(seq uint64, _ Arrival, _ string, _ []string, _ *bytes.Buffer) [][]byte {
	return [][]byte{c.msgs[seq%uint64(len(c.msgs))]}
}
