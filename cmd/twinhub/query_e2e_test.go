package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// queryResult is one POST /devices/query answer.
type queryResult struct {
	httpResp
	rows []json.RawMessage
}

func (p *proc) query(t *testing.T, sql string, header ...string) queryResult {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": sql})
	r := p.call(t, "POST", "/devices/query?api-version=2021-04-12", string(body), append([]string{"Content-Type", "application/json; charset=utf-8"}, header...)...)
	res := queryResult{httpResp: r}
	if r.Status == 200 {
		if err := json.Unmarshal(r.Body, &res.rows); err != nil {
			t.Fatalf("%s: body is not a JSON array: %v: %s", sql, err, r.Body)
		}
	}
	return res
}

// ids returns the deviceId of each row.
func (r queryResult) ids() []string {
	out := []string{}
	for _, row := range r.rows {
		var d struct{ DeviceID string }
		json.Unmarshal(row, &d)
		out = append(out, d.DeviceID)
	}
	return out
}

// TestQuerySeed runs the device-twin how-to's two queries over HTTP right
// after each write, with no waiting: after the back end tags the device,
// the plant query finds it and the plant-and-cellular query does not; as
// soon as the device got its 204 for reporting cellular, both find it.
// Rows are the twins exactly as GET /twins returns them.
func TestQuerySeed(t *testing.T) {
	p := startTwinhub(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const (
		byPlant         = "SELECT * FROM devices WHERE tags.location.plant = 'Redmond43'"
		byPlantCellular = "SELECT * FROM devices WHERE tags.location.plant = 'Redmond43' AND properties.reported.connectivity.type = 'cellular'"
	)
	if r := p.call(t, "PUT", "/devices/myDeviceId", `{"deviceId":"myDeviceId"}`); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
	if r := p.query(t, byPlant); r.Status != 200 || len(r.rows) != 0 {
		t.Fatalf("before tagging: %d %s", r.Status, r.Body)
	}
	tw := p.call(t, "GET", "/twins/myDeviceId", "").json(t)
	r := p.call(t, "PATCH", "/twins/myDeviceId", `{"tags":{"location":{"region":"US","plant":"Redmond43"}}}`, "If-Match", strconv.Quote(tw["etag"].(string)))
	if r.Status != 200 {
		t.Fatalf("tagging: %d %s", r.Status, r.Body)
	}
	q := p.query(t, byPlant, "x-ms-max-item-count", "100")
	if q.Status != 200 || !slices.Equal(q.ids(), []string{"myDeviceId"}) {
		t.Fatalf("plant query after tagging: %d %s", q.Status, q.Body)
	}
	if it := q.Header.Get("x-ms-item-type"); it != "twin" {
		t.Errorf("x-ms-item-type %q, want twin", it)
	}
	if _, ok := q.Header["X-Ms-Continuation"]; ok {
		t.Errorf("the last page has an x-ms-continuation header: %q", q.Header.Get("x-ms-continuation"))
	}
	if ct := q.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q", ct)
	}
	if q := p.query(t, byPlantCellular); q.Status != 200 || len(q.rows) != 0 {
		t.Fatalf("plant-and-cellular query before the device reported: %d %s", q.Status, q.Body)
	}

	dev, err := p.dialDevice(t, ctx, "myDeviceId")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Report(ctx, []byte(`{"connectivity":{"type":"cellular"},"note":"<a&b> é"}`)); err != nil {
		t.Fatalf("reported patch: %v", err)
	}
	for _, sql := range []string{byPlant, byPlantCellular} {
		q := p.query(t, sql)
		if q.Status != 200 || !slices.Equal(q.ids(), []string{"myDeviceId"}) {
			t.Fatalf("%s after the device's 204: %d %s", sql, q.Status, q.Body)
		}
		if get := p.call(t, "GET", "/twins/myDeviceId", ""); string(q.rows[0]) != string(get.Body) {
			t.Fatalf("query row\n%s\nGET /twins gives\n%s", q.rows[0], get.Body)
		}
	}

	// Registry changes are queryable at once too.
	if r := p.call(t, "PUT", "/devices/myDeviceId", `{"deviceId":"myDeviceId","status":"disabled"}`, "If-Match", `"*"`); r.Status != 200 {
		t.Fatalf("disabling: %d %s", r.Status, r.Body)
	}
	q = p.query(t, "SELECT deviceId, status FROM devices WHERE status = 'disabled'")
	if q.Status != 200 || len(q.rows) != 1 || string(q.rows[0]) != `{"deviceId":"myDeviceId","status":"disabled"}` {
		t.Fatalf("after disabling: %d %s", q.Status, q.Body)
	}
	// Disabling ends the device's session, and the query sees it leave.
	waitFor(t, 10*time.Second, "the disabled device's connectionState to be Disconnected", func() bool {
		q := p.query(t, "SELECT deviceId FROM devices WHERE status = 'disabled' AND connectionState = 'Disconnected'")
		return q.Status == 200 && len(q.rows) == 1
	})
}

// TestQueryAPI covers the rest of POST /devices/query: paging with
// x-ms-max-item-count and x-ms-continuation (no header on the last page),
// raw rows for projections and aggregates, errors, authorization, the CLI,
// and a restart (the projection loads from the twin records).
func TestQueryAPI(t *testing.T) {
	dir := t.TempDir()
	p := startTwinhub(t, dir)
	for i := range 8 {
		id := fmt.Sprintf("dev%02d", i)
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
		tags := fmt.Sprintf(`{"tags":{"plant":%q,"floor":%d}}`, []string{"A", "B"}[i%2], i%3)
		if r := p.call(t, "PATCH", "/twins/"+id, tags, "If-Match", `"*"`); r.Status != 200 {
			t.Fatalf("tag %s: %d %s", id, r.Status, r.Body)
		}
	}
	checkPaging := func(t *testing.T, p *proc) {
		var all []string
		var sizes []int
		token := ""
		for page := 0; ; page++ {
			h := []string{"x-ms-max-item-count", "3"}
			if token != "" {
				h = append(h, "x-ms-continuation", token)
			}
			q := p.query(t, "SELECT * FROM devices WHERE IS_DEFINED(tags.plant)", h...)
			if q.Status != 200 {
				t.Fatalf("page %d: %d %s", page+1, q.Status, q.Body)
			}
			all = append(all, q.ids()...)
			sizes = append(sizes, len(q.rows))
			vals, present := q.Header["X-Ms-Continuation"]
			if !present {
				break
			}
			if len(vals) != 1 || vals[0] == "" {
				t.Fatalf("page %d: continuation %q", page+1, vals)
			}
			token = vals[0]
		}
		if !slices.Equal(sizes, []int{3, 3, 2}) || !slices.IsSorted(all) || len(all) != 8 {
			t.Fatalf("pages of %v: %v", sizes, all)
		}
	}
	checkPaging(t, p)

	q := p.query(t, "SELECT tags.plant AS plant, COUNT() AS n FROM devices GROUP BY tags.plant ORDER BY plant DESC")
	if q.Status != 200 || q.Header.Get("x-ms-item-type") != "raw" || string(q.Body) != `[{"n":4,"plant":"B"},{"n":4,"plant":"A"}]` {
		t.Fatalf("group by: %d %s %v", q.Status, q.Body, q.Header)
	}
	q = p.query(t, "SELECT TOP 2 deviceId, tags.floor FROM devices WHERE tags.plant = 'A' ORDER BY tags.floor DESC")
	if q.Status != 200 || q.Header.Get("x-ms-item-type") != "raw" || string(q.Body) != `[{"deviceId":"dev02","floor":2},{"deviceId":"dev04","floor":1}]` {
		t.Fatalf("projection: %d %s", q.Status, q.Body)
	}

	for _, c := range []struct {
		name, body string
		header     []string
	}{
		{"parse error", `{"query":"SELECT * FORM devices"}`, nil},
		{"no query", `{"sql":"SELECT * FROM devices"}`, nil},
		{"not JSON", `SELECT * FROM devices`, nil},
		{"bad page size", `{"query":"SELECT * FROM devices"}`, []string{"x-ms-max-item-count", "zero"}},
		{"bad token", `{"query":"SELECT * FROM devices"}`, []string{"x-ms-continuation", "garbage"}},
	} {
		r := p.call(t, "POST", "/devices/query", c.body, c.header...)
		if r.Status != 400 || r.Header.Get("iothub-errorcode") != "ArgumentInvalid" {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
		}
	}
	if r := p.call(t, "POST", "/devices/query", `{"query":"SELECT * FORM devices"}`); !strings.Contains(string(r.Body), "line 1, column 10") {
		t.Errorf("a parse error names its place: %s", r.Body)
	}
	if p.owner != "" {
		if r := p.call(t, "POST", "/devices/query", `{"query":"SELECT * FROM devices"}`, "Authorization", ""); r.Status != 401 {
			t.Errorf("without a token: %d %s", r.Status, r.Body)
		}
	}

	out, err := p.cli(t, "query", "--page-size", "2", "SELECT deviceId FROM devices WHERE tags.floor = 2")
	if err != nil {
		t.Fatalf("twinhub query: %v", err)
	}
	var rows []map[string]string
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 2 || rows[0]["deviceId"] != "dev02" || rows[1]["deviceId"] != "dev05" {
		t.Fatalf("twinhub query printed %v:\n%s", err, out)
	}
	if out, err := p.cli(t, "query", "SELECT * FORM devices"); err == nil || !strings.Contains(err.Error(), "expected FROM") {
		t.Fatalf("twinhub query with a bad query: %v\n%s", err, out)
	}

	p.stop()
	p = startTwinhub(t, dir)
	checkPaging(t, p)
}
