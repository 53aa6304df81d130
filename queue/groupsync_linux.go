package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// groupSyncSupported: syncfs(2) is Linux's.
const groupSyncSupported = true

// syncFilesystem commits every dirty page and inode of f's filesystem: the
// block files the server wrote to, and a block or directory entry it
// created when a block filled.
func syncFilesystem(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
