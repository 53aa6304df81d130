package queue

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// A Partition is one of the streams the mail queue is split into. Each is
// a JetStream stream of its own, so each has its own file store and fsync
// lane on one node, and its own leader in a cluster: partitions are how
// durable intake grows past one stream's sync rate.
//
// With one partition the layout is a single stream named Config.Stream on
// "<SubjectPrefix>.<domain>" (Levee's layout before partitions). With N
// partitions, partition i is the stream "<Stream>_<i>" on
// "<SubjectPrefix>-<i>.<domain>": the subject spaces never overlap, so a
// queue can hold both layouts while it moves from one to the other.
type Partition struct {
	Index  int
	Stream string
	// Prefix is the subject prefix: "<Prefix>.<domain>".
	Prefix string
}

// Layout is the partitions mail is published to, in order.
func (c Config) Layout() []Partition {
	n := max(c.Partitions, 1)
	if n == 1 {
		return []Partition{{Index: 0, Stream: c.Stream, Prefix: c.SubjectPrefix}}
	}
	out := make([]Partition, n)
	for i := range out {
		out[i] = c.partition(i)
	}
	return out
}

func (c Config) partition(i int) Partition {
	s := strconv.Itoa(i)
	return Partition{Index: i, Stream: c.Stream + "_" + s, Prefix: c.SubjectPrefix + "-" + s}
}

// Route is the partition of the message with this id: a stable hash of the
// content-derived id, so that the same message (an MTA's retransmission)
// always lands in the same stream, where the duplicate window catches it,
// and one domain's flood spreads over every partition.
func (c Config) Route(id string) Partition {
	parts := c.Layout()
	return parts[routeIndex(id, len(parts))]
}

// routeIndex is the index of id's partition among n: FNV-1a of the id.
func routeIndex(id string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// Share is partition i's share of a total limit over n partitions: the
// total divided as evenly as integers allow, so that the shares add up to
// the total exactly. A positive total gives every partition at least 1.
func Share(total int64, i, n int) int64 {
	if total <= 0 || n <= 1 {
		return total
	}
	s := total / int64(n)
	if int64(i) < total%int64(n) {
		s++
	}
	return max(s, 1)
}

// partitionName matches the streams of either layout for Config.Stream.
func (c Config) partitionName() *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(c.Stream) + `(?:_(\d+))?$`)
}

// MailStreams are the mail streams there are for cfg: its layout's, then
// any other on the server of either layout, ordered by name. Those no
// longer published to still hold mail until the workers drained them (a
// change of queue.partitions, or an upgrade from the single stream).
func MailStreams(ctx context.Context, js jetstream.JetStream, cfg Config) ([]Partition, error) {
	existing, err := ExistingMailStreams(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	return Union(cfg.Layout(), existing), nil
}

// ExistingMailStreams are the mail streams on the server of either layout
// for cfg's stream name, ordered by name.
func ExistingMailStreams(ctx context.Context, js jetstream.JetStream, cfg Config) ([]Partition, error) {
	re := cfg.partitionName()
	var out []Partition
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		m := re.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if m[1] == "" {
			out = append(out, Partition{Index: 0, Stream: cfg.Stream, Prefix: cfg.SubjectPrefix})
			continue
		}
		i, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		out = append(out, cfg.partition(i))
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("queue: list streams: %w", err)
	}
	slices.SortFunc(out, func(a, b Partition) int { return strings.Compare(a.Stream, b.Stream) })
	return out, nil
}

// CurrentLayout is the layout the last start set up, as the mail streams'
// metadata say (MetadataLayout), for tools that have no config: every mail
// stream on the server not marked draining, ordered by name. An older
// Levee's single stream carries no mark and counts as current.
func CurrentLayout(ctx context.Context, js jetstream.JetStream, cfg Config) ([]Partition, error) {
	existing, configs, err := existingMailConfigs(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	var out []Partition
	for i, p := range existing {
		if configs[i].Metadata[MetadataLayout] != layoutDraining {
			out = append(out, p)
		}
	}
	return out, nil
}

// existingMailConfigs are the mail streams on the server
// (ExistingMailStreams) with their live configs, leaving out any deleted
// between the listing and the look-up (a drained stream).
func existingMailConfigs(ctx context.Context, js jetstream.JetStream, cfg Config) ([]Partition, []jetstream.StreamConfig, error) {
	existing, err := ExistingMailStreams(ctx, js, cfg)
	if err != nil {
		return nil, nil, err
	}
	var parts []Partition
	var configs []jetstream.StreamConfig
	for _, p := range existing {
		s, err := js.Stream(ctx, p.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("queue: stream %s: %w", p.Stream, err)
		}
		parts = append(parts, p)
		configs = append(configs, s.CachedInfo().Config)
	}
	return parts, configs, nil
}

// WithLayout is c with the partition count of layout, when layout is
// exactly the streams c would then use (so that Route sends a message
// where the workers and the duplicate window expect it).
func (c Config) WithLayout(layout []Partition) (Config, bool) {
	c.Partitions = len(layout)
	want := c.Layout()
	return c, slices.EqualFunc(want, layout, func(a, b Partition) bool { return a.Stream == b.Stream })
}

// Union is a followed by the partitions of b not in a.
func Union(a, b []Partition) []Partition {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.ContainsFunc(out, func(x Partition) bool { return x.Stream == p.Stream }) {
			out = append(out, p)
		}
	}
	return out
}

// DomainOf is the recipient-domain part of a mail subject of any
// partition ("levee.mail-2.example.com" -> "example.com"), "" when subject
// is not one.
func (c Config) DomainOf(subject string) string {
	rest, ok := strings.CutPrefix(subject, c.SubjectPrefix)
	if !ok {
		return ""
	}
	if r, ok := strings.CutPrefix(rest, "."); ok {
		return r
	}
	if r, ok := strings.CutPrefix(rest, "-"); ok {
		if i, d, ok := strings.Cut(r, "."); ok {
			if _, err := strconv.Atoi(i); err == nil {
				return d
			}
		}
	}
	return ""
}

// mailStreams is the mail streams the workers drain now: the layout's,
// then those of other layouts still there.
func (q *Queue) mailStreams() []Partition {
	q.partsMu.Lock()
	defer q.partsMu.Unlock()
	return q.parts
}

func (q *Queue) setMailStreams(parts []Partition) {
	q.partsMu.Lock()
	defer q.partsMu.Unlock()
	q.parts = parts
}

// draining says whether p is a stream of another layout.
func (q *Queue) draining(p Partition) bool {
	return !slices.ContainsFunc(q.layout, func(l Partition) bool { return l.Stream == p.Stream })
}

// forgetStreams stops reading the streams of other layouts that were
// deleted once drained (by an operator, or on the embedded server by
// removeDrained).
func (q *Queue) forgetStreams(gone []Partition) {
	q.partsMu.Lock()
	defer q.partsMu.Unlock()
	q.parts = slices.DeleteFunc(slices.Clone(q.parts), func(p Partition) bool {
		return q.draining(p) && slices.ContainsFunc(gone, func(g Partition) bool { return g.Stream == p.Stream })
	})
	for _, p := range gone {
		q.metrics.partition.DeleteLabelValues(p.Stream)
		q.log.Info("queue: a drained mail stream of another layout was deleted; no longer reading it", "stream", p.Stream)
	}
}

// discoverStreams adds the mail streams of another layout that appeared
// since (a process started with another queue.partitions), with the
// workers' consumer on each, so that their mail is drained too.
func (q *Queue) discoverStreams(ctx context.Context) error {
	found, err := ExistingMailStreams(ctx, q.js, q.cfg)
	if err != nil {
		return err
	}
	known := q.mailStreams()
	var added []Partition
	for _, p := range found {
		if slices.ContainsFunc(known, func(k Partition) bool { return k.Stream == p.Stream }) {
			continue
		}
		if _, err := q.js.CreateOrUpdateConsumer(ctx, p.Stream, q.cfg.consumerConfig(p)); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue // gone again
			}
			return fmt.Errorf("queue: consumer %s on %s: %w", q.cfg.Durable, p.Stream, err)
		}
		added = append(added, p)
		q.log.Info("queue: draining a mail stream of another layout that appeared", "stream", p.Stream)
	}
	if len(added) > 0 {
		q.partsMu.Lock()
		q.parts = append(slices.Clone(q.parts), added...)
		q.partsMu.Unlock()
	}
	return nil
}
