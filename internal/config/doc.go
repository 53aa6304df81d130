// Package config reads a configuration struct from its three spellings,
// all derived from one table of keys: the struct's own tags. A field
// tagged `config:"max_msgs"` inside a field tagged `config:"queue"` is the
// key queue.max_msgs, which is
//
//   - the YAML key queue.max_msgs (nested: queue: {max_msgs: ...}),
//   - the environment variable LEVEE_QUEUE_MAX_MSGS,
//   - the flag --queue-max-msgs (or the field's `flag:"..."` tag),
//
// with the help text of its `help` tag. Defaults are the struct's values
// before loading; `default:"..."` replaces the shown default where the real
// one is only known at run time (this host's name), and `unit:"bytes"`
// reads and shows a size as 512MiB. A field tagged `config:",inline"`
// lends its keys to its parent's level. Fields without a tag are not keys.
//
// Load applies the file, then the environment, then the flags (flags win);
// every value parses the same way in all three, and an invalid one fails
// naming its key and where it came from. The same table renders the help
// text and the README's configuration table (Markdown).
package config
