package config

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/levee-mail/levee/internal/bytesize"
)

// Key is one configuration key, with its three spellings.
type Key struct {
	Name    string // dotted YAML key: smtp.addr
	Flag    string // smtp-addr, without dashes
	Env     string // LEVEE_SMTP_ADDR
	Help    string
	Default string // as shown: the value before loading, or the default tag

	index []int // the field, from the root struct
	bytes bool  // unit:"bytes"
	shown string
}

// Keys lists the keys of the struct cfg points to, in field order, with
// their defaults as cfg holds them now. It panics on a field type it cannot
// read: that is a programming error, caught by any test that calls it.
func Keys(cfg any) []Key {
	v := reflect.ValueOf(cfg).Elem()
	var keys []Key
	collect(v.Type(), nil, "", &keys)
	for i := range keys {
		if keys[i].shown != "" {
			keys[i].Default = keys[i].shown
		} else {
			keys[i].Default = keys[i].get(v)
		}
	}
	return keys
}

func collect(t reflect.Type, index []int, prefix string, keys *[]Key) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("config")
		if !ok || !f.IsExported() {
			continue
		}
		idx := append(slices.Clone(index), i)
		name, inline := strings.CutSuffix(tag, ",inline")
		if name != "" && prefix != "" {
			name = prefix + "." + name
		} else if name == "" {
			name = prefix
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
			collect(f.Type, idx, name, keys)
			continue
		}
		if inline {
			panic(fmt.Sprintf("config: %s: only a struct can be inline", f.Name))
		}
		k := Key{
			Name: name, Help: f.Tag.Get("help"), index: idx,
			bytes: f.Tag.Get("unit") == "bytes", shown: f.Tag.Get("default"),
			Env:  "LEVEE_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(name)),
			Flag: f.Tag.Get("flag"),
		}
		if k.Flag == "" {
			k.Flag = strings.NewReplacer(".", "-", "_", "-").Replace(name)
		}
		checkKind(f)
		*keys = append(*keys, k)
	}
}

var durationType = reflect.TypeFor[time.Duration]()

func checkKind(f reflect.StructField) {
	switch f.Type.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Float64:
		return
	case reflect.Slice:
		if f.Type.Elem().Kind() == reflect.String {
			return
		}
	}
	panic(fmt.Sprintf("config: field %s: type %s is not a config value", f.Name, f.Type))
}

func (k Key) field(root reflect.Value) reflect.Value { return root.FieldByIndex(k.index) }

// get renders the key's value in cfg as Set reads it.
func (k Key) get(root reflect.Value) string {
	f := k.field(root)
	switch {
	case f.Type() == durationType:
		return time.Duration(f.Int()).String()
	case f.Kind() == reflect.String:
		return f.String()
	case f.Kind() == reflect.Bool:
		return strconv.FormatBool(f.Bool())
	case f.Kind() == reflect.Float64:
		return strconv.FormatFloat(f.Float(), 'g', -1, 64)
	case f.Kind() == reflect.Slice:
		return strings.Join(f.Interface().([]string), ",")
	case k.bytes:
		return bytesize.Format(f.Int())
	}
	return strconv.FormatInt(f.Int(), 10)
}

// set parses v into the key's field of cfg. Its error does not name the
// key: the caller does, with where the value came from.
func (k Key) set(root reflect.Value, v string) error {
	f := k.field(root)
	s := strings.TrimSpace(v)
	switch {
	case f.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 168h)", v)
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(v)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", v)
		}
		f.SetBool(b)
	case f.Kind() == reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", v)
		}
		f.SetFloat(x)
	case f.Kind() == reflect.Slice:
		var list []string
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		f.Set(reflect.ValueOf(list))
	default:
		n, err := k.parseInt(s)
		if err != nil {
			return err
		}
		if f.OverflowInt(n) {
			return fmt.Errorf("%d is out of range", n)
		}
		f.SetInt(n)
	}
	return nil
}

func (k Key) parseInt(s string) (int64, error) {
	if k.bytes {
		return bytesize.Parse(s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	return n, nil
}

// Sources are where Load reads values besides the defaults, from the
// weakest to the strongest.
type Sources struct {
	// File is a YAML file; "" means none, unless Environ names one in
	// LEVEE_CONFIG.
	File string
	// Environ is the process environment (KEY=value); only LEVEE_* count.
	Environ []string
	// Flags are the flags given, by key name (see Flags).
	Flags map[string]string
}

// Load sets cfg's keys from src: the file, then the environment, then the
// flags. Any invalid value, and any unknown key in the file, fails naming
// the key and its source.
func Load(cfg any, src Sources) error {
	root := reflect.ValueOf(cfg).Elem()
	keys := Keys(cfg)
	env := map[string]string{}
	for _, kv := range src.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "LEVEE_") {
			env[k] = v
		}
	}
	path := src.File
	if path == "" {
		path = env["LEVEE_CONFIG"]
	}
	if path != "" {
		if err := loadFile(root, keys, path); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if v, ok := env[k.Env]; ok {
			if err := k.set(root, v); err != nil {
				return fmt.Errorf("%s (%s): %w", k.Name, k.Env, err)
			}
		}
	}
	for _, k := range keys {
		if v, ok := src.Flags[k.Name]; ok {
			if err := k.set(root, v); err != nil {
				return fmt.Errorf("%s (--%s): %w", k.Name, k.Flag, err)
			}
		}
	}
	return nil
}

func loadFile(root reflect.Value, keys []Key, path string) error {
	values, err := readYAML(path)
	if err != nil {
		return err
	}
	byName := map[string]Key{}
	for _, k := range keys {
		byName[k.Name] = k
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		k, ok := byName[name]
		if !ok {
			return fmt.Errorf("%s: %s: unknown key", path, name)
		}
		if err := k.set(root, values[name]); err != nil {
			return fmt.Errorf("%s: %s: %w", path, name, err)
		}
	}
	return nil
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
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, sub := range t {
				if prefix != "" {
					k = prefix + "." + k
				}
				walk(k, sub)
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
	}
	walk("", doc)
	return out, nil
}

// Flags defines a flag on fs for every key of cfg, with its help, default
// and environment variable (a boolean's flag alone means true), and returns
// where the values given end up, by key name, for Sources.Flags. The flags do not parse: Load does, so that
// a flag's value parses like the same value in the file or environment.
func Flags(fs *flag.FlagSet, cfg any) map[string]string {
	given := map[string]string{}
	root := reflect.ValueOf(cfg).Elem()
	for _, k := range Keys(cfg) {
		usage := fmt.Sprintf("%s (env %s, default %q)", k.Help, k.Env, k.Default)
		record := func(v string) error {
			given[k.Name] = v
			return nil
		}
		if k.field(root).Kind() == reflect.Bool {
			fs.BoolFunc(k.Flag, usage, record) // --flag alone means true
		} else {
			fs.Func(k.Flag, usage, record)
		}
	}
	return given
}

// Markdown is the table of every key of cfg, sorted by key, as the README
// shows it.
func Markdown(cfg any) string {
	keys := Keys(cfg)
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteString("| key (YAML) | flag | environment | default | meaning |\n|---|---|---|---|---|\n")
	for _, k := range keys {
		def := "`" + k.Default + "`"
		if k.Default == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | `%s` | %s | %s |\n", k.Name, k.Flag, k.Env, def, k.Help)
	}
	return b.String()
}
