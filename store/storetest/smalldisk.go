package storetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// SmallDisk mounts a tmpfs of size bytes (as mount's size= option, "8m") on
// a new directory and returns it; it is unmounted when t ends, after
// whatever the test registered later (a store on it) has closed. A store
// on it can be run out of space for real (see FillDisk).
//
// Mounting needs root. Where it cannot mount, the test is skipped on a
// developer machine and fails in CI (CI or LEVEE_TEST_POSTGRES_REQUIRED=1,
// which .ci/run sets), so that a full disk is never silently untested there.
func SmallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a %s tmpfs on %s (needs root): %v: %s", size, dir, err, out)
		if os.Getenv("CI") != "" || os.Getenv("LEVEE_TEST_POSTGRES_REQUIRED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; set CI=1 to fail instead")
	}
	t.Cleanup(func() {
		// Lazy: a file a leaked goroutine still holds must not fail the
		// test's cleanup; the space is freed when it lets go.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// FillDisk writes a file in dir until its filesystem has no space left and
// returns the file's path: removing it gives the space back.
func FillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatalf("fill %s: %v", dir, err)
		}
	}
}
