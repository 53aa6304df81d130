package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildOut  []byte
)

// TestMain removes the binary that the process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// leveeBinary builds the levee command once per test run. LEVEE_TEST_BINARY
// names a levee built elsewhere instead, so that BenchmarkPipeline can
// measure an older commit under the same harness, in the same session:
//
//	git worktree add /tmp/old COMMIT && (cd /tmp/old && go build -o /tmp/levee-old ./cmd/levee)
//	LEVEE_TEST_BINARY=/tmp/levee-old go test -run '^$' -bench Pipeline ./cmd/levee/
func leveeBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("LEVEE_TEST_BINARY"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "levee-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "levee")
		buildOut, buildErr = exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return builtBin
}

// process is a levee child process.
type process struct {
	t        testing.TB
	cmd      *exec.Cmd
	SMTPAddr string
	httpAddr string

	mu   sync.Mutex
	logs []string
	done chan struct{}
	err  error
}

var startedLine = regexp.MustCompile(`msg="levee started"(?: smtp=(\S+))? roles=\S+ http=(\S+)`)

// startProcess runs `levee args...` and waits for its "levee started" line.
func startProcess(t testing.TB, args ...string) *process {
	t.Helper()
	p := &process{t: t, cmd: exec.Command(leveeBinary(t), args...), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			if m := startedLine.FindStringSubmatch(line); m != nil {
				started <- m
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("levee %s output:\n%s", strings.Join(args, " "), p.output())
		}
	})
	select {
	case m := <-started:
		p.SMTPAddr, p.httpAddr = m[1], m[2]
	case <-p.done:
		t.Fatalf("levee %v exited before starting: %v\n%s", args, p.err, p.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("levee %v did not start:\n%s", args, p.output())
	}
	return p
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// stop sends SIGTERM and returns the exit error (nil for exit 0).
func (p *process) stop(timeout time.Duration) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("levee did not exit within %s of SIGTERM", timeout)
		return nil
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
