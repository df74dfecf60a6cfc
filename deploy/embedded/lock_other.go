//go:build !unix

package embedded

import "os"

// tryLock does not lock on this platform: twinhub's data directory lock
// needs flock(2). Running two instances on one directory is then the
// operator's to avoid.
func tryLock(*os.File) (bool, error) { return true, nil }
