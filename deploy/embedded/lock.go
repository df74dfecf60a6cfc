package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the name of the lock file in a data directory.
const LockFile = "twinhub.lock"

// ErrDataDirInUse means another process holds the data directory's lock.
var ErrDataDirInUse = errors.New("data directory is in use")

// DirLock is an exclusive lock on a data directory, held until Close or
// until the process ends (the kernel releases it even after kill -9).
//
// Two nats-servers on one JetStream store corrupt it: each rewrites the
// other's message blocks and index files. The lock makes the second
// `twinhub run` fail at once instead.
type DirLock struct {
	f *os.File
}

// LockDataDir takes the exclusive lock on dir, creating its lock file if
// needed, and records this process's ID in it. It fails with
// ErrDataDirInUse, naming the holder's PID when known, if another process
// holds the lock; it never waits.
func LockDataDir(dir string) (*DirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file %s: %w", path, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if !held {
		holder := "another process"
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = fmt.Sprintf("another process (pid %d)", pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("%w: %s holds %s; stop that twinhub or start this one with another --data-dir",
			ErrDataDirInUse, holder, path)
	}
	// Only the holder writes the file, so a reader sees the holder's PID.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// Close releases the lock. The lock file stays: removing it would let a
// process that opened it just before lock a file no one else sees.
func (l *DirLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the lock
	l.f = nil
	return err
}
