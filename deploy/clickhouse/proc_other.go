//go:build !linux

package clickhouse

import "syscall"

// sysProcAttr puts the server in its own process group (a terminal's ^C
// reaches twinhub, which stops the server in order).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
