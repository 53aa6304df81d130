//go:build !linux

package queue

import (
	"errors"
	"os"
)

// groupSyncSupported: elsewhere the server keeps its fsync per write.
const groupSyncSupported = false

func syncFilesystem(*os.File) error { return errors.New("queue: group sync needs Linux's syncfs") }
