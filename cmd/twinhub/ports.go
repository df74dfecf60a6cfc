package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
)

// checkPorts tries every address `twinhub run` is about to listen on and
// reports all that are taken at once, each with its flag, before anything
// starts: a busy port is a mistake to fix in one go, not one at a time
// and after a start-up timeout. Port 0 (a free port) is never busy.
func checkPorts(c runConfig) error {
	type listener struct{ flag, addr string }
	ls := []listener{{"--http-addr", c.httpAddr}, {"--https-addr", c.httpsAddr}}
	if c.mqttURL == "" {
		ls = append(ls, listener{"--mqtt-addr", c.mqttAddr}, listener{"--mqtts-addr", c.mqttsAddr})
	}
	if c.natsURL == "" {
		ls = append(ls, listener{"--nats-addr", c.natsAddr})
	}
	var busy []string
	seen := map[string]string{} // address -> flag
	for _, l := range ls {
		if l.addr == "" {
			continue // turned off
		}
		if _, port, err := net.SplitHostPort(l.addr); err != nil || port == "0" {
			continue // validate reports a malformed address
		}
		if other, ok := seen[l.addr]; ok {
			busy = append(busy, fmt.Sprintf("%s %s (also %s's)", l.flag, l.addr, other))
			continue
		}
		seen[l.addr] = l.flag
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			reason := err.Error()
			if errors.Is(err, syscall.EADDRINUSE) {
				reason = "in use"
			}
			busy = append(busy, fmt.Sprintf("%s %s (%s)", l.flag, l.addr, reason))
			continue
		}
		ln.Close()
	}
	if len(busy) == 0 {
		return nil
	}
	return fmt.Errorf("cannot listen on %s: stop what holds them (another twinhub run? `ss -ltnp` names it) "+
		"or choose other addresses (port 0 picks a free one)", strings.Join(busy, ", "))
}
