package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type limits struct {
	Detect bool `config:"detect" help:"detect things"`
}

type section struct {
	Addr     string        `config:"addr" help:"listen address"`
	MaxBytes int64         `config:"max_bytes" unit:"bytes" help:"a size"`
	Count    int32         `config:"count" help:"a count"`
	Wait     time.Duration `config:"wait" help:"a wait"`
	Ratio    float64       `config:"ratio" help:"a ratio"`
	Domains  []string      `config:"domains" flag:"domains" help:"a list"`
	Host     string        `config:"host" default:"this host's name" help:"a name"`
	Limits   limits        `config:",inline"`
	Derived  int           // not a key
}

type root struct {
	DataDir string  `config:"data_dir" help:"where"`
	Sec     section `config:"sec"`
}

func defaults() root {
	return root{DataDir: "./data", Sec: section{Addr: "127.0.0.1:25", MaxBytes: 1 << 20, Count: 3, Wait: time.Second,
		Ratio: 0.5, Domains: []string{"a.test", "b.test"}, Host: "box"}}
}

func TestKeysSpellingsAndDefaults(t *testing.T) {
	c := defaults()
	var got []string
	for _, k := range Keys(&c) {
		got = append(got, strings.Join([]string{k.Name, k.Flag, k.Env, k.Default}, " "))
	}
	want := []string{
		"data_dir data-dir LEVEE_DATA_DIR ./data",
		"sec.addr sec-addr LEVEE_SEC_ADDR 127.0.0.1:25",
		"sec.max_bytes sec-max-bytes LEVEE_SEC_MAX_BYTES 1MiB",
		"sec.count sec-count LEVEE_SEC_COUNT 3",
		"sec.wait sec-wait LEVEE_SEC_WAIT 1s",
		"sec.ratio sec-ratio LEVEE_SEC_RATIO 0.5",
		"sec.domains domains LEVEE_SEC_DOMAINS a.test,b.test",
		"sec.host sec-host LEVEE_SEC_HOST this host's name",
		"sec.detect sec-detect LEVEE_SEC_DETECT false",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoadPrecedenceFileEnvFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "data_dir: /from/file\nsec:\n  addr: file:25\n  max_bytes: 2GiB\n  domains: [x.test, y.test]\n  detect: false\n  wait: 5m\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c := defaults()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	given := Flags(fs, &c)
	if err := fs.Parse([]string{"--sec-addr", "flag:25", "--domains", "z.test", "--sec-ratio", "0.25", "--sec-detect"}); err != nil {
		t.Fatal(err)
	}
	env := []string{"LEVEE_SEC_ADDR=env:25", "LEVEE_SEC_COUNT=9", "LEVEE_SEC_RATIO=0.75", "HOME=/root", "LEVEE_CONFIG=" + path}
	if err := Load(&c, Sources{Environ: env, Flags: given}); err != nil {
		t.Fatal(err)
	}
	want := root{DataDir: "/from/file", Sec: section{Addr: "flag:25", MaxBytes: 2 << 30, Count: 9, Wait: 5 * time.Minute,
		Ratio: 0.25, Domains: []string{"z.test"}, Host: "box", Limits: limits{Detect: true}}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("loaded %+v\nwant   %+v", c, want)
	}
}

func TestInvalidValuesNameKeyAndSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	for _, tc := range []struct {
		file  string
		env   []string
		flags map[string]string
		want  string
	}{
		{env: []string{"LEVEE_SEC_COUNT=many"}, want: `sec.count (LEVEE_SEC_COUNT): invalid integer "many"`},
		{env: []string{"LEVEE_SEC_COUNT=99999999999"}, want: "sec.count (LEVEE_SEC_COUNT): 99999999999 is out of range"},
		{flags: map[string]string{"sec.wait": "soon"}, want: `sec.wait (--sec-wait): invalid duration "soon"`},
		{flags: map[string]string{"sec.max_bytes": "lots"}, want: `sec.max_bytes (--sec-max-bytes): invalid size "lots"`},
		{flags: map[string]string{"sec.detect": "maybe"}, want: `sec.detect (--sec-detect): invalid boolean "maybe"`},
		{file: "sec:\n  adr: x\n", want: path + ": sec.adr: unknown key"},
		{file: "sec:\n  ratio: half\n", want: path + `: sec.ratio: invalid number "half"`},
		{file: "sec: [\n", want: "config file " + path},
	} {
		c := defaults()
		src := Sources{Environ: tc.env, Flags: tc.flags}
		if tc.file != "" {
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			src.File = path
		}
		if err := Load(&c, src); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Load(%+v) = %v, want an error starting %q", tc, err, tc.want)
		}
	}
	if err := Load(new(root), Sources{File: filepath.Join(t.TempDir(), "missing.yaml")}); err == nil || !strings.Contains(err.Error(), "config file") {
		t.Errorf("a missing file: %v", err)
	}
}

func TestMarkdownIsSortedAndComplete(t *testing.T) {
	c := defaults()
	md := Markdown(&c)
	lines := strings.Split(strings.TrimSpace(md), "\n")
	if len(lines) != 2+9 {
		t.Fatalf("%d lines:\n%s", len(lines), md)
	}
	if lines[2] != "| `data_dir` | `--data-dir` | `LEVEE_DATA_DIR` | `./data` | where |" ||
		lines[3] != "| `sec.addr` | `--sec-addr` | `LEVEE_SEC_ADDR` | `127.0.0.1:25` | listen address |" {
		t.Errorf("rows:\n%s", md)
	}
	c.DataDir = ""
	if !strings.Contains(Markdown(&c), "| `LEVEE_DATA_DIR` | (empty) |") {
		t.Errorf("an empty default is not shown as (empty):\n%s", Markdown(&c))
	}
}

func TestAFieldThatIsNoValuePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Keys accepted a map field")
		}
	}()
	Keys(&struct {
		M map[string]int `config:"m"`
	}{})
}
