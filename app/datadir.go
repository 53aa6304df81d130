package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the file in data_dir whose lock a running Levee holds.
const lockFileName = "levee.lock"

// lockDataDir takes the data directory for this process before anything in
// it is opened: a second Levee on the same directory would otherwise open
// the embedded JetStream store and rewrite the running one's stream
// settings before failing on a busy port. The lock is the kernel's
// (flock), so it goes with the process, even on kill -9; the pid written
// into the file is only for the error message.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if pid := strings.TrimSpace(string(holder)); pid != "" {
				who = "another levee process (pid " + pid + ")"
			}
			return nil, fmt.Errorf("data_dir: %s is in use by %s; stop it first, or give this one its own --data-dir", dir, who)
		}
		return nil, fmt.Errorf("data_dir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
