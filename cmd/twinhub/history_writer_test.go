package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// historyWriters is how many of ps report themselves as the history writer.
func historyWriters(t *testing.T, ps ...*proc) int {
	t.Helper()
	n := 0
	for _, p := range ps {
		if p.metricValue(t, "twinhub_history_writer") == "1" {
			n++
		}
	}
	return n
}

func metricFloat(t *testing.T, p *proc, series string) float64 {
	t.Helper()
	v, _ := strconv.ParseFloat(p.metricValue(t, series), 64)
	return v
}

// TestHistoryWriterFailover runs two instances on one NATS (A embeds it, B
// uses it), both with the history sink on, writing to one ClickHouse
// database, under a closed loop of twin changes. Exactly one instance
// reports itself as the history writer. The test makes B the writer and
// kills it with SIGKILL: A takes over (the time to its first row is
// logged), and ClickHouse ends up holding every version of every device
// exactly once, without gaps.
func TestHistoryWriterFailover(t *testing.T) {
	srv := startClickHouse(t)
	chURL := srv.URL("")
	a := startTwinhub(t, "", "--clickhouse-url", chURL)
	b := startTwinhub(t, "", "--clickhouse-url", chURL, "--nats-url", a.natsURL(t, embedded.InternalNATSUser))

	const devices = 16
	created := map[string]int64{} // device → twin version at creation
	for i := range devices {
		id := fmt.Sprintf("hw-%02d", i)
		if r := a.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
		r := a.call(t, "GET", "/twins/"+id, "")
		v, _ := r.json(t)["version"].(float64)
		created[id] = int64(v)
	}

	// A closed loop of desired patches through A, which survives.
	var stop atomic.Bool
	var acked, lastAck atomic.Int64 // lastAck: when the latest acknowledgement came (Unix ns)
	var wg sync.WaitGroup
	for i := range devices {
		wg.Add(1)
		// Patches one device until stop.
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("hw-%02d", i)
			for n := 0; !stop.Load(); n++ {
				r := a.call(t, "PATCH", "/twins/"+id, fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, n))
				if r.Status == 200 {
					acked.Add(1)
					lastAck.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	waitFor(t, 30*time.Second, "one instance to become the history writer", func() bool { return historyWriters(t, a, b) == 1 })
	for range 20 {
		if n := historyWriters(t, a, b); n != 1 {
			t.Fatalf("%d instances report themselves as the history writer under load, want 1", n)
		}
		time.Sleep(100 * time.Millisecond) // the sampling interval, not a condition
	}

	// Make B the writer, so that killing it leaves A's NATS running.
	nc, err := nats.Connect(a.natsURL(t, embedded.InternalNATSUser), nats.CustomInboxPrefix(topology.InternalInboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	stream, err := js.Stream(context.Background(), topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "B to become the history writer", func() bool {
		if b.metricValue(t, "twinhub_history_writer") == "1" && a.metricValue(t, "twinhub_history_writer") == "0" {
			return true
		}
		if a.metricValue(t, "twinhub_history_writer") == "1" {
			stream.UnpinConsumer(context.Background(), topology.HistoryConsumer, topology.HistoryPriorityGroup)
			waitFor(t, 10*time.Second, "a new writer", func() bool { return a.metricValue(t, "twinhub_history_writer") == "0" })
		}
		return false
	})
	writtenByB := metricFloat(t, b, "twinhub_history_events_written_total")
	waitFor(t, 30*time.Second, "B to write history", func() bool {
		return metricFloat(t, b, "twinhub_history_events_written_total") > writtenByB
	})

	writtenByA := metricFloat(t, a, "twinhub_history_events_written_total")
	b.kill()
	killed := time.Now()
	waitFor(t, 60*time.Second, "a change acknowledged after the kill", func() bool { return lastAck.Load() > killed.UnixNano() })
	resumed := time.Since(killed)
	waitFor(t, 60*time.Second, "A to become the history writer", func() bool { return historyWriters(t, a) == 1 })
	became := time.Since(killed)
	waitFor(t, 60*time.Second, "A to write history", func() bool {
		return metricFloat(t, a, "twinhub_history_events_written_total") > writtenByA
	})
	firstRow := time.Since(killed)
	// Changes stop while B's partitions wait for their commands' AckWait;
	// A's sink takes over at the first change event after its pin expired.
	t.Logf("after kill -9 of the writer B: changes acknowledged again after %s; A became the history writer after %s "+
		"and wrote its first rows %s after the kill", resumed.Round(time.Millisecond), became.Round(time.Millisecond),
		firstRow.Round(time.Millisecond))
	if !strings.Contains(a.logs.String(), `msg="this instance is now the history writer"`) {
		t.Error("A did not log that it became the history writer")
	}

	// Some more load with A writing, then let the sink catch up.
	time.Sleep(time.Second) // load duration, not a condition
	stop.Store(true)
	wg.Wait()
	waitFor(t, 60*time.Second, "A to write every change event", func() bool {
		return a.metricValue(t, "twinhub_history_lag_events") == "0"
	})

	opts, err := chdeploy.ParseURL(chURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	total := 0
	for id, from := range created {
		r := a.call(t, "GET", "/twins/"+id, "")
		v, _ := r.json(t)["version"].(float64)
		to := int64(v)
		var rows, distinct uint64
		var lo, hi int64
		if err := conn.QueryRow(context.Background(), `SELECT count(), uniqExact(version), min(version), max(version)
			FROM twin_events WHERE device_id = ?`, id).Scan(&rows, &distinct, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		total += int(rows)
		if rows != distinct || lo != from || hi != to || int64(rows) != to-from+1 {
			t.Errorf("%s: ClickHouse holds %d rows of %d versions from %d to %d; the twin went from version %d to %d: "+
				"every version must be there exactly once", id, rows, distinct, lo, hi, from, to)
		}
	}
	t.Logf("%d patches acknowledged; ClickHouse holds %d change events of %d devices, each exactly once", acked.Load(), total, devices)
}
