package layout

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImports checks every package of the module against its rule.
func TestImports(t *testing.T) {
	t.Parallel()
	for _, p := range listPackages(t) {
		from, _ := levee(p.ImportPath)
		t.Run(from, func(t *testing.T) {
			if p.Error != nil {
				// Mid-restructure a package may not build; its imports are still listed.
				t.Logf("listed with an error, imports checked as listed: %s", p.Error.Err)
			}
			r := ruleFor(from)
			if r == nil {
				t.Fatalf("%s: no rule covers this package; place it in rules (internal/layout/rules_test.go) with the Levee packages it may import", from)
			}
			for _, imp := range p.Imports {
				if to, ok := levee(imp); ok {
					if why := r.forbids(from, to); why != "" {
						t.Errorf("%s imports %s: %s", from, to, why)
					}
				}
			}
			for _, imp := range append(p.TestImports, p.XTestImports...) {
				if to, ok := levee(imp); ok && to != from && matchAny([]string{"cmd/...", "app"}, to) && !matchAny(r.may, to) {
					t.Errorf("%s's tests import %s: tests below the binary never import cmd/... or app; a stage's tests exercise that stage (only cmd/... imports app)", from, to)
				}
			}
		})
	}
}

// TestRules keeps the table honest: one rule per package, a reason for each,
// and no import both allowed and forbidden.
func TestRules(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, r := range rules {
		if r.why == "" {
			t.Errorf("rule for %v has no why: say where the package sits in the data flow", r.pkgs)
		}
		for _, p := range r.pkgs {
			if seen[p] {
				t.Errorf("%s is governed by two rules", p)
			}
			seen[p] = true
		}
		for _, n := range r.never {
			for _, m := range r.may {
				if match(n, base(m)) || match(m, base(n)) {
					t.Errorf("rule for %v both allows %s and forbids %s", r.pkgs, m, n)
				}
			}
		}
	}
}

// TestForbids pins the three ways an import fails and the messages that say so.
func TestForbids(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ from, to, want string }{
		{"ingest", "store", "ingest never imports store ("},
		{"ingest", "queue/fleet", "ingest may import only queue, mail, internal/... ("},
		{"store/sqlite", "store/storetest", "production code never imports a test helper"},
		{"cmd/levee", "queue/queuetest", "production code never imports a test helper"},
		{"mail", "internal/bytesize", "mail imports no Levee package ("},
		{"store/sqlite", "store", ""},
		{"web/opsclient", "web", ""},
		{"queue", "queue", ""},
	} {
		got := ruleFor(tc.from).forbids(tc.from, tc.to)
		if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s -> %s: got %q, want it to start with %q", tc.from, tc.to, got, tc.want)
		}
	}
}

// forbids says why from (governed by r) may not import to in production
// code, or returns "" if it may.
func (r *rule) forbids(from, to string) string {
	if to == from {
		return ""
	}
	if target := ruleFor(to); target != nil && target.helper {
		return "production code never imports a test helper, only _test.go files do (" + to + ": " + target.why + ")"
	}
	if matchAny(r.never, to) {
		return from + " never imports " + to + " (" + r.why + ")"
	}
	if len(r.may) == 0 {
		return from + " imports no Levee package (" + r.why + ")"
	}
	if !matchAny(r.may, to) {
		return from + " may import only " + strings.Join(r.may, ", ") + " (" + r.why + ")"
	}
	return ""
}

func ruleFor(pkg string) *rule {
	for i, r := range rules {
		for _, p := range r.pkgs {
			if p == pkg {
				return &rules[i]
			}
		}
	}
	return nil
}

// match reports whether pkg is pattern, or below it for "x/...".
func match(pattern, pkg string) bool {
	if b, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == b || strings.HasPrefix(pkg, b+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	for _, p := range patterns {
		if match(p, pkg) {
			return true
		}
	}
	return false
}

func base(pattern string) string { return strings.TrimSuffix(pattern, "/...") }

// levee returns a Levee import path relative to the module.
func levee(importPath string) (string, bool) {
	if importPath == module {
		return ".", true
	}
	rel, ok := strings.CutPrefix(importPath, module+"/")
	return rel, ok
}

// listed is the part of `go list -json` the rules read. Imports are the
// production imports; TestImports and XTestImports those of _test.go files.
type listed struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

// listPackages lists the module's packages with -e, so that packages that do
// not compile are listed too, with the imports they declare.
func listPackages(t *testing.T) []listed {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error", "./...")
	cmd.Dir = filepath.Join("..", "..") // the module root, seen from internal/layout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", cmd.Dir, err, stderr.Bytes())
	}
	var pkgs []listed
	self := false
	for dec := json.NewDecoder(bytes.NewReader(out)); dec.More(); {
		var p listed
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if _, ok := levee(p.ImportPath); !ok {
			t.Fatalf("go list in %s lists %s, which is not a Levee package: is %s still the module root?", cmd.Dir, p.ImportPath, cmd.Dir)
		}
		self = self || p.ImportPath == module+"/internal/layout"
		pkgs = append(pkgs, p)
	}
	if !self {
		t.Fatalf("go list in %s does not list internal/layout: the test would check nothing", cmd.Dir)
	}
	return pkgs
}
