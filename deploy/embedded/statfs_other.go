//go:build !unix

package embedded

// freeBytes does not know the free space on this platform.
func freeBytes(string) int64 { return -1 }
