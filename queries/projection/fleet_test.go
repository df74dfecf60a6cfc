package projection

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/pipeline/twin"
	"github.com/twinhub/twinhub/queries/lang"
)

// fleet is a reference fleet of real twins (built with pipeline/twin, so
// their JSON is what the hub stores) that tests change at random and feed
// to a projection, and to lang as decoded documents.
type fleet struct {
	t     testing.TB
	r     *rand.Rand
	twins map[string]*twin.Twin
	now   time.Time
	rev   uint64
	next  int
}

func newFleet(t testing.TB, seed uint64) *fleet {
	return &fleet{t: t, r: rand.New(rand.NewPCG(seed, seed+1)), twins: map[string]*twin.Twin{},
		now: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)}
}

func (f *fleet) pick(s ...string) string { return s[f.r.IntN(len(s))] }

// Values the generators draw from, so that conditions hit real twins.
var (
	fleetRegions = []string{"US", "EU", "APAC"}
	fleetPlants  = []string{"Redmond43", "Seattle", "Berlin", "Tokyo", "Dublin", "Red"}
	fleetNums    = []string{"0", "1", "1.0", "2", "2.50", "2.5", "-0", "1e1", "10", "21", "21.0", "-3.5", "100", "4503599627370495", "0.000001", "7e-7"}
	fleetStrs    = []string{"hot", "cold", "", "<a&b>", "it's", "é", "3", "Red", "Redmond43", "d01", "x"}
)

// newID returns a fresh device ID, some with characters that need escaping
// in keys.
func (f *fleet) newID() string {
	f.next++
	switch f.r.IntN(8) {
	case 0:
		return fmt.Sprintf("x-sensor-%d", f.next)
	case 1:
		return fmt.Sprintf("pump.%d", f.next)
	case 2:
		return fmt.Sprintf("Sensor-%d", f.next)
	}
	return fmt.Sprintf("d%03d", f.next)
}

func (f *fleet) tick() time.Time {
	f.now = f.now.Add(time.Duration(1+f.r.IntN(5000)) * time.Millisecond)
	return f.now
}

func (f *fleet) scalar() string {
	switch f.r.IntN(6) {
	case 0, 1:
		return f.pick(fleetNums...)
	case 2, 3:
		b, _ := json.Marshal(f.pick(fleetStrs...))
		return string(b)
	case 4:
		return f.pick("true", "false")
	}
	return "null"
}

func (f *fleet) reportedPatch() string {
	var parts []string
	add := func(k, v string) { parts = append(parts, fmt.Sprintf("%q:%s", k, v)) }
	if f.r.IntN(2) == 0 {
		add("temp", f.pick(append([]string{`"hot"`, "null", "22.5", "15"}, fleetNums...)...))
	}
	if f.r.IntN(3) == 0 {
		add("battery", fmt.Sprint(f.r.IntN(100)))
	}
	if f.r.IntN(3) == 0 {
		add("fw", f.pick(`"1.0"`, `"1.1"`, `"2.0"`, `"10.0"`, "null", "2"))
	}
	if f.r.IntN(3) == 0 {
		add("online", f.pick("true", "false", "null"))
	}
	if f.r.IntN(3) == 0 {
		add("connectivity", fmt.Sprintf(`{"type":%s}`, f.pick(`"cellular"`, `"wifi"`, `"ethernet"`, "null")))
	}
	if f.r.IntN(5) == 0 {
		add("sensors", fmt.Sprintf(`{"a":{"b":{"value":%s}}}`, f.scalar()))
	}
	if f.r.IntN(6) == 0 {
		add("list", f.pick("[1,2,3]", "[1.0,2]", `["a"]`, "[]", `[{"k":1}]`, "null"))
	}
	if f.r.IntN(5) == 0 {
		add("telemetryConfig", fmt.Sprintf(`{"status":%s}`, f.pick(`"Success"`, `"Pending"`, `"Failed"`, "null")))
	}
	if f.r.IntN(8) == 0 {
		add("empty", f.pick("{}", "null", `{"x":{}}`))
	}
	if f.r.IntN(4) == 0 {
		add("note", f.scalar())
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func (f *fleet) tagsPatch() string {
	var parts []string
	add := func(k, v string) { parts = append(parts, fmt.Sprintf("%q:%s", k, v)) }
	if f.r.IntN(2) == 0 {
		add("location", fmt.Sprintf(`{"region":%q,"plant":%q}`, f.pick(fleetRegions...), f.pick(fleetPlants...)))
	}
	if f.r.IntN(3) == 0 {
		add("floor", f.pick("0", "1", "2", "3", `"3"`, "null", "2.0"))
	}
	if f.r.IntN(3) == 0 {
		add("critical", f.pick("true", "false", "null"))
	}
	if f.r.IntN(4) == 0 {
		add("owner", f.pick(`"ops"`, `"dev"`, "null"))
	}
	if f.r.IntN(5) == 0 {
		add("labels", f.pick(`["a","b"]`, `["a"]`, "null"))
	}
	if f.r.IntN(5) == 0 {
		add("group", f.pick(`"g1"`, `"g2"`, "null"))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func parseObject(t testing.TB, s string) map[string]any {
	m, err := twin.ParseObject([]byte(s))
	if err != nil {
		t.Fatalf("patch %s: %v", s, err)
	}
	return m
}

// create adds a device and returns its ID.
func (f *fleet) create() string {
	id := f.newID()
	tw := twin.New(id, f.tick())
	if f.r.IntN(4) == 0 {
		tw.Status = "disabled"
	}
	f.twins[id] = tw
	return id
}

// change applies one random change to a device.
func (f *fleet) change(id string) {
	tw := f.twins[id]
	var err error
	switch f.r.IntN(6) {
	case 0, 1, 2:
		tw, err = twin.ApplyReported(tw, parseObject(f.t, f.reportedPatch()), f.tick())
		if err == nil {
			tw.LastActivityTime = f.now
		}
	case 3, 4:
		var desired map[string]any
		if f.r.IntN(3) == 0 {
			desired = parseObject(f.t, fmt.Sprintf(`{"telemetryConfig":{"sendFrequency":%q}}`, f.pick("5m", "1m", "1h")))
		}
		tw, err = twin.ApplyService(tw, parseObject(f.t, f.tagsPatch()), desired, f.tick())
	default:
		tw = tw.Clone()
		tw.ConnectionState = f.pick("Connected", "Disconnected")
		tw.Status = f.pick("enabled", "enabled", "disabled")
	}
	if err != nil {
		f.t.Fatalf("changing %s: %v", id, err)
	}
	f.twins[id] = tw
}

func (f *fleet) ids() []string {
	ids := make([]string, 0, len(f.twins))
	for id := range f.twins {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (f *fleet) twinJSON(id string) []byte {
	b, err := json.Marshal(f.twins[id])
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// changeOf is the projection change for a device's current state.
func (f *fleet) changeOf(id string) change {
	f.rev++
	c := change{deviceID: id, rev: f.rev}
	if _, ok := f.twins[id]; ok {
		c.twin = f.twinJSON(id)
	}
	return c
}

// build creates n devices with a few changes each.
func (f *fleet) build(n int) {
	for range n {
		id := f.create()
		for range f.r.IntN(4) {
			f.change(id)
		}
	}
}

// mutate makes n random changes (creations, deletions, updates) and
// returns them as projection changes, in order.
func (f *fleet) mutate(n int) []change {
	var out []change
	ids := f.ids()
	for range n {
		switch k := f.r.IntN(10); {
		case k == 0 || len(ids) == 0:
			id := f.create()
			ids = append(ids, id)
			out = append(out, f.changeOf(id))
		case k == 1:
			i := f.r.IntN(len(ids))
			id := ids[i]
			ids = slices.Delete(ids, i, i+1)
			delete(f.twins, id)
			out = append(out, f.changeOf(id))
		default:
			id := ids[f.r.IntN(len(ids))]
			f.change(id)
			out = append(out, f.changeOf(id))
		}
	}
	return out
}

// docs returns the fleet as lang sees it: decoded twins in deviceId order.
func (f *fleet) docs() []map[string]any {
	var out []map[string]any
	for _, id := range f.ids() {
		out = append(out, decodeTwin(f.twinJSON(id)))
	}
	return out
}

// projection builds a projection loaded with the fleet.
func (f *fleet) projection() *Projection {
	p, err := newProjection(Config{}, nil, prometheus.NewRegistry())
	if err != nil {
		f.t.Fatal(err)
	}
	var changes []change
	for _, id := range f.ids() {
		changes = append(changes, f.changeOf(id))
	}
	// Load in a scrambled order: load sorts.
	f.r.Shuffle(len(changes), func(i, j int) { changes[i], changes[j] = changes[j], changes[i] })
	st := &stager{codec: p.store.codec}
	for _, c := range changes {
		st.add(c)
	}
	p.load(st.finish())
	return p
}

// queryGen writes random queries over the fleet's paths.
type queryGen struct {
	r *rand.Rand
}

func (g *queryGen) pick(s ...string) string { return s[g.r.IntN(len(s))] }

var genPaths = []string{
	"deviceId", "DeviceId", "devices.status", "connectionState", "version", "lastActivityTime", "etag", "modelId",
	"capabilities.iotEdge", "x509Thumbprint.primaryThumbprint", "x509Thumbprint",
	"tags", "tags.location", "tags.location.region", "tags.location.plant", "tags.floor", "tags.critical",
	"tags.owner", "tags.labels", "tags.group", "tags.nothing", "tags.location.region.x",
	"properties.reported.temp", "properties.reported.battery", "properties.reported.fw", "properties.reported.online",
	"properties.reported.connectivity.type", "properties.reported.connectivity", "properties.reported.sensors.a.b.value",
	"properties.reported.list", "properties.reported.telemetryConfig.status", "properties.reported.$version",
	"properties.reported.empty", "properties.reported.empty.x", "properties.reported.note",
	"properties.desired.telemetryConfig.sendFrequency", "properties.desired.$version",
	"properties.reported.$metadata.$lastUpdated", "properties.reported.$metadata.fw.$lastUpdated",
	"properties.desired.$metadata.$lastUpdatedVersion", "properties.reported", "missing",
}

// scalarPaths are paths with scalar values, the usual targets of conditions.
var scalarPaths = []string{
	"deviceId", "status", "connectionState", "version", "lastActivityTime", "tags.location.region", "tags.location.plant",
	"tags.floor", "tags.critical", "tags.owner", "tags.group", "properties.reported.temp", "properties.reported.battery",
	"properties.reported.fw", "properties.reported.online", "properties.reported.connectivity.type",
	"properties.reported.sensors.a.b.value", "properties.reported.telemetryConfig.status", "properties.reported.note",
	"properties.desired.telemetryConfig.sendFrequency", "properties.reported.$version",
	"properties.reported.$metadata.fw.$lastUpdated",
}

func (g *queryGen) constant() string {
	switch g.r.IntN(10) {
	case 0, 1:
		return g.pick(fleetNums...)
	case 2:
		return fmt.Sprint(g.r.IntN(30))
	case 3, 4:
		return quoteQ(g.pick(append(append([]string{"US", "EU", "APAC", "cellular", "wifi", "Success", "ops", "g1", "5m",
			"enabled", "disabled", "Connected", "d005", "d010", "pump.3", "2024-05-01T10:00:10", "1.0", "1.1", "2.0"}, fleetStrs...), fleetPlants...)...))
	case 5:
		return g.pick("true", "false", "null")
	case 6:
		return g.pick("[1, 2]", "['a', 'b']", "[]")
	case 7:
		return "undefined"
	}
	return g.pick(fleetNums...)
}

func quoteQ(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

func (g *queryGen) array() string {
	n := g.r.IntN(4)
	parts := make([]string, n)
	for i := range parts {
		c := g.constant()
		if c == "undefined" {
			c = "null"
		}
		parts[i] = c
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (g *queryGen) path() string {
	if g.r.IntN(3) > 0 {
		return g.pick(scalarPaths...)
	}
	return g.pick(genPaths...)
}

// cond writes a condition, mostly of the shapes the planner indexes.
func (g *queryGen) cond(depth int) string {
	if depth > 0 {
		switch g.r.IntN(7) {
		case 0, 1:
			return g.cond(depth-1) + " AND " + g.cond(depth-1)
		case 2:
			return "(" + g.cond(depth-1) + " OR " + g.cond(depth-1) + ")"
		case 3:
			return "NOT (" + g.cond(depth-1) + ")"
		}
	}
	op := g.pick("=", "!=", "<>", "<", "<=", ">", ">=", "=", "=")
	switch g.r.IntN(14) {
	case 0, 1, 2:
		return g.path() + " " + op + " " + g.constant()
	case 3:
		return g.constant() + " " + op + " " + g.path()
	case 4:
		return g.path() + g.pick(" IN ", " NIN ", " IN ") + g.array()
	case 5:
		return g.pick("STARTSWITH", "ENDSWITH", "STARTSWITH") + "(" + g.path() + ", " + g.pick("'d'", "'x'", "'Red'", "'1'", "''", "'pump.'", "'2024-05-01T10:0'", "'é'", "'<'") + ")"
	case 6:
		return g.pick("IS_DEFINED", "IS_NULL", "NOT IS_DEFINED", "NOT IS_NULL") + "(" + g.pick(genPaths...) + ")"
	case 7:
		return g.pick("tags.critical", "properties.reported.online", "NOT tags.critical", "capabilities.iotEdge", "tags.owner")
	case 8:
		return g.path() + " " + g.pick("+", "-", "*", "/", "%") + " " + fmt.Sprint(1+g.r.IntN(5)) + " " + op + " " + fmt.Sprint(g.r.IntN(40))
	case 9:
		return g.path() + " " + op + " " + g.path()
	case 10:
		return g.pick("true", "false", "1 = 1", "null", "undefined = 1", "'a' < 'b'")
	case 11:
		return "properties.reported.temp " + op + " properties.reported.battery"
	}
	return g.pick(scalarPaths[:7]...) + " = " + g.constant()
}

func (g *queryGen) expr(depth int) string {
	if depth <= 0 || g.r.IntN(3) == 0 {
		if g.r.IntN(4) == 0 {
			return g.constant()
		}
		return g.pick(genPaths...)
	}
	switch g.r.IntN(4) {
	case 0:
		return g.expr(depth-1) + " " + g.pick("+", "-", "*") + " " + g.expr(depth-1)
	case 1:
		return "(" + g.cond(0) + ")"
	case 2:
		return g.pick("IS_DEFINED", "IS_NULL") + "(" + g.pick(genPaths...) + ")"
	}
	return g.pick(genPaths...)
}

func (g *queryGen) query() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	if g.r.IntN(4) == 0 {
		fmt.Fprintf(&b, "TOP %d ", 1+g.r.IntN(15))
	}
	var names, groups []string
	grouped := false
	switch g.r.IntN(4) {
	case 0, 1:
		b.WriteString("*")
	case 2:
		n := 1 + g.r.IntN(3)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			if g.r.IntN(2) == 0 {
				fmt.Fprintf(&b, "%s AS a%d", g.expr(2), i)
			} else {
				fmt.Fprintf(&b, "%s AS a%d", g.pick(genPaths...), i)
			}
			names = append(names, fmt.Sprintf("a%d", i))
		}
	default:
		grouped = true
		for range g.r.IntN(3) {
			p := g.pick(append(scalarPaths, genPaths...)...)
			if !slices.Contains(groups, p) {
				groups = append(groups, p)
			}
		}
		var items []string
		for i, p := range groups {
			items = append(items, fmt.Sprintf("%s AS k%d", p, i))
			names = append(names, fmt.Sprintf("k%d", i))
		}
		for i := range 1 + g.r.IntN(3) {
			agg := "COUNT()"
			if fn := g.pick("COUNT", "AVG", "SUM", "MIN", "MAX"); fn != "COUNT" {
				arg := g.pick(scalarPaths...)
				if g.r.IntN(5) == 0 {
					arg = g.expr(1)
				}
				agg = fn + "(" + arg + ")"
			}
			items = append(items, fmt.Sprintf("%s AS g%d", agg, i))
			names = append(names, fmt.Sprintf("g%d", i))
		}
		b.WriteString(strings.Join(items, ", "))
	}
	b.WriteString(" FROM devices")
	if g.r.IntN(5) != 0 {
		b.WriteString(" WHERE " + g.cond(g.r.IntN(3)))
	}
	if len(groups) > 0 {
		b.WriteString(" GROUP BY " + strings.Join(groups, ", "))
	}
	if g.r.IntN(3) == 0 {
		var keys []string
		for range 1 + g.r.IntN(2) {
			var k string
			switch {
			case grouped:
				k = names[g.r.IntN(len(names))]
			case names != nil && g.r.IntN(2) == 0:
				k = names[g.r.IntN(len(names))]
			default:
				k = g.pick(genPaths...)
			}
			keys = append(keys, k+g.pick("", " ASC", " DESC"))
		}
		b.WriteString(" ORDER BY " + strings.Join(keys, ", "))
	}
	return b.String()
}

// runAll runs a query through the projection page by page and returns
// every row.
func runAll(t testing.TB, p *Projection, src string, pageSize int) (rows []json.RawMessage, twins bool, pages int) {
	t.Helper()
	tok := ""
	for {
		page, err := p.Query(t.Context(), Request{Query: src, PageSize: pageSize, Continuation: tok})
		if err != nil {
			t.Fatalf("%s: page %d: %v", src, pages+1, err)
		}
		pages++
		if len(page.Items) > pageSize {
			t.Fatalf("%s: page of %d rows, size %d", src, len(page.Items), pageSize)
		}
		rows = append(rows, page.Items...)
		twins = page.Twins
		if page.Continuation == "" {
			return rows, twins, pages
		}
		if len(page.Items) == 0 {
			t.Fatalf("%s: empty page %d with a continuation token", src, pages)
		}
		tok = page.Continuation
		if pages > 10000 {
			t.Fatalf("%s: more than 10000 pages", src)
		}
	}
}

// expected runs a query with lang over the decoded fleet, in deviceId order.
func expected(t testing.TB, src string, docs []map[string]any) []json.RawMessage {
	t.Helper()
	q, err := lang.Parse(src)
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	rows, err := q.Execute(slices.Values(docs))
	if err != nil {
		t.Fatalf("Execute(%q): %v", src, err)
	}
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		if out[i], err = json.Marshal(r); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sameRows compares the projection's rows with lang's: SELECT * rows must
// be the stored twin JSON of the same devices, in the same order; other rows
// must be the same JSON.
func sameRows(t testing.TB, f *fleet, src string, got, want []json.RawMessage, twins bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, lang gives %d\n got: %s\nwant: %s", src, len(got), len(want), ids(got), ids(want))
	}
	for i := range got {
		if twins {
			var w struct{ DeviceID string }
			json.Unmarshal(want[i], &w)
			if !bytes.Equal(got[i], f.twinJSON(w.DeviceID)) {
				t.Fatalf("%s: row %d is\n%s\nwant the twin of %s:\n%s\n got: %s\nwant: %s", src, i, got[i], w.DeviceID, f.twinJSON(w.DeviceID), ids(got), ids(want))
			}
			continue
		}
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: row %d is\n%s\nlang gives\n%s", src, i, got[i], want[i])
		}
	}
}

func ids(rows []json.RawMessage) string {
	var out []string
	for _, r := range rows {
		var w struct{ DeviceID string }
		json.Unmarshal(r, &w)
		out = append(out, w.DeviceID)
	}
	return strings.Join(out, ",")
}
