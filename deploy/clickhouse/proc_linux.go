package clickhouse

import "syscall"

// sysProcAttr puts the server in its own process group (a terminal's ^C
// reaches twinhub, which stops the server in order) and has the kernel send
// it SIGTERM if twinhub dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
