package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHTTPSlowBody: 150 clients that send their headers and then dribble
// the body a byte at a time are cut off once --http-read-timeout (2 s here)
// passes: each connection is closed by the hub, after a 408 where the
// client could still read it, and the partial bodies change nothing.
// Meanwhile a normal client is answered at once.
func TestHTTPSlowBody(t *testing.T) {
	const clients = 150
	p := startTwinhub(t, "", "--http-read-timeout", "2s")
	p.call(t, "PUT", "/devices/slow", "")
	addr := strings.TrimPrefix(p.HTTP, "http://")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dribblers sync.WaitGroup
	defer dribblers.Wait()
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		head := fmt.Sprintf("PATCH /twins/slow HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\nIf-Match: \"*\"\r\n"+
			"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"tags\":{\"slow\":", p.ownerToken(t))
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		dribblers.Add(1)
		// Writes a byte every 100 ms until the hub closes the connection
		// or the test ends.
		go func() {
			defer dribblers.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
	}

	// A normal client is served while the slow ones hold their connections.
	if r := p.call(t, "GET", "/twins/slow", ""); r.Status != 200 {
		t.Errorf("a normal client got %d %s while slow clients were connected", r.Status, r.Body)
	}
	if r := p.call(t, "PATCH", "/twins/slow", `{"tags":{"fast":1}}`, "If-Match", `"*"`); r.Status != 200 {
		t.Errorf("a normal client's patch got %d %s while slow clients were connected", r.Status, r.Body)
	}
	before := p.call(t, "GET", "/twins/slow", "").Body

	// Every slow connection is closed by the hub well before the 100,000
	// bytes could have been sent (that would take almost 3 hours).
	deadline := time.Now().Add(30 * time.Second)
	timeouts := 0
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		got, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d still open after 30 s (read %q)", i, got)
		}
		if resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil); rerr == nil {
			if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get("iothub-errorcode") != "RequestTimeout" {
				t.Errorf("connection %d: got %d %s, want 408 RequestTimeout", i, resp.StatusCode, resp.Header.Get("iothub-errorcode"))
			}
			timeouts++
		}
		// Otherwise the hub reset the connection before the client read
		// the 408 (its writes kept arriving): closed all the same.
	}
	if timeouts == 0 {
		t.Errorf("no slow client got a 408 response")
	}
	t.Logf("%d of %d slow clients read a 408 before the connection closed", timeouts, clients)
	if after := p.call(t, "GET", "/twins/slow", "").Body; !bytes.Equal(before, after) {
		t.Errorf("a cut-off request changed the twin:\nbefore %s\nafter  %s", before, after)
	}
}
