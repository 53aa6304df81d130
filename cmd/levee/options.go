package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// option is one configuration key. Every key has the same three spellings —
// YAML key, environment variable and flag — derived from one table so that
// they can never drift apart, and `levee serve --help` lists them all.
type option struct {
	key  string // YAML key, dotted: smtp.addr
	help string
	// get renders the current (default) value for the help text.
	get func(c *Config) string
	// set parses v into c; its error must not name the key (the caller does).
	set func(c *Config, v string) error
	// flagName overrides the derived flag name (smtp.addr -> smtp-addr).
	flagName string
}

func (o option) flag() string {
	if o.flagName != "" {
		return o.flagName
	}
	return strings.NewReplacer(".", "-", "_", "-").Replace(o.key)
}

func (o option) env() string {
	return "LEVEE_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(o.key))
}

// loadConfig builds the configuration in order of precedence: defaults, then
// the YAML file (--config or LEVEE_CONFIG), then LEVEE_* environment
// variables, then flags. Any invalid value fails naming its key.
func loadConfig(fs *flag.FlagSet, opts []option, args []string, environ []string) (Config, error) {
	cfg := defaultConfig()
	flagVals := map[string]string{}
	configPath := ""
	fs.StringVar(&configPath, "config", "", "path to a YAML config file (env LEVEE_CONFIG)")
	for _, o := range opts {
		fs.Func(o.flag(), fmt.Sprintf("%s (env %s, default %q)", o.help, o.env(), o.get(&cfg)), func(v string) error {
			flagVals[o.key] = v
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "LEVEE_") {
			env[k] = v
		}
	}
	if configPath == "" {
		configPath = env["LEVEE_CONFIG"]
	}
	byKey := map[string]option{}
	for _, o := range opts {
		byKey[o.key] = o
	}
	if configPath != "" {
		values, err := readYAML(configPath)
		if err != nil {
			return cfg, err
		}
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			o, ok := byKey[k]
			if !ok {
				return cfg, fmt.Errorf("%s: %s: unknown key", configPath, k)
			}
			if err := o.set(&cfg, values[k]); err != nil {
				return cfg, fmt.Errorf("%s: %s: %w", configPath, k, err)
			}
		}
	}
	for _, o := range opts {
		if v, ok := env[o.env()]; ok {
			if err := o.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s (%s): %w", o.key, o.env(), err)
			}
		}
	}
	for _, o := range opts {
		if v, ok := flagVals[o.key]; ok {
			if err := o.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s (--%s): %w", o.key, o.flag(), err)
			}
		}
	}
	return cfg, nil
}

// readYAML flattens a nested YAML document into dotted keys with scalar
// values rendered as strings (lists joined with commas).
func readYAML(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := map[string]string{}
	var walk func(prefix string, v any) error
	walk = func(prefix string, v any) error {
		switch t := v.(type) {
		case map[string]any:
			for k, sub := range t {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				if err := walk(key, sub); err != nil {
					return err
				}
			}
		case []any:
			parts := make([]string, len(t))
			for i, e := range t {
				parts[i] = fmt.Sprint(e)
			}
			out[prefix] = strings.Join(parts, ",")
		case nil:
			out[prefix] = ""
		default:
			out[prefix] = fmt.Sprint(t)
		}
		return nil
	}
	if err := walk("", doc); err != nil {
		return nil, err
	}
	return out, nil
}

// Parsers shared by the option table.

func parseBytes(v string) (int64, error) {
	s := strings.TrimSpace(v)
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 1048576, 512MiB, 20GiB)", v)
	}
	return int64(n * float64(mult)), nil
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}

func parseInt(v string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", v)
	}
	return n, nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 168h)", v)
	}
	return d, nil
}

func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("invalid boolean %q (want true or false)", v)
	}
	return b, nil
}

func parseFloat(v string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, fmt.Errorf("invalid number %q", v)
	}
	return f, nil
}

func parseList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

var errHelp = errors.New("help requested")
