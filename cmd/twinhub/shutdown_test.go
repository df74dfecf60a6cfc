package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestShutdownWhileDevicesLeave stops twinhub at the moment 2,000 connected
// clients go away, as a fleet does when a network drops: the shutdown must
// finish, SIGTERM to a clean exit within 30 s. (mochi's own Close can
// deadlock then; TestBrokerCloseDoesNotHang in deploy/embedded covers the
// bound on it, which this timing rarely reaches.)
func TestShutdownWhileDevicesLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	hub := startTwinhub(t, "", "--auth=false")
	const n = 2000
	clients := make([]paho.Client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		// Exits once its client is connected or has failed to.
		go func() {
			defer wg.Done()
			c := paho.NewClient(paho.NewClientOptions().AddBroker(hub.MQTT).SetClientID(fmt.Sprintf("leaver-%d", i)).
				SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(20 * time.Second))
			tok := c.Connect()
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("client %d: %v", i, tok.Error())
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range clients {
		wg.Add(1)
		// Exits after closing its client.
		go func() {
			defer wg.Done()
			c.Disconnect(0)
		}()
	}
	hub.stop() // fails the test unless the hub exits cleanly within 30 s of SIGTERM
	wg.Wait()
}
