package projection

import (
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPlannerMatchesLang is the projection's main invariant: for random
// queries over a random fleet that keeps changing, the rows the projection
// returns, concatenated over every page at a random page size, are exactly
// lang's Execute over the decoded twins in deviceId order (SELECT * rows
// byte for byte the stored twin).
func TestPlannerMatchesLang(t *testing.T) {
	rounds, perRound := 8, 250
	if testing.Short() {
		rounds, perRound = 4, 100
	}
	f := newFleet(t, 7)
	f.build(300)
	p := f.projection()
	g := &queryGen{r: rand.New(rand.NewPCG(3, 4))}
	for round := range rounds {
		docs := f.docs()
		for range perRound {
			src := g.query()
			size := []int{2, 3, 7, 50, 1000, 1000}[g.r.IntN(6)]
			if g.r.IntN(20) == 0 {
				size = 1
			}
			got, twins, _ := runAll(t, p, src, size)
			sameRows(t, f, src, got, expected(t, src, docs), twins)
		}
		p.apply(f.mutate(200 + round*20))
	}
}

// TestIndexedQueries checks shapes the planner answers from indexes alone,
// on a fleet that changes, including its edge cases: numbers written
// differently, kinds that never compare, undefined, objects, $metadata.
func TestIndexedQueries(t *testing.T) {
	f := newFleet(t, 11)
	f.build(400)
	p := f.projection()
	queries := []string{
		`SELECT * FROM devices WHERE tags.location.plant = 'Redmond43'`,
		`SELECT * FROM devices WHERE tags.location.plant = 'Redmond43' AND properties.reported.connectivity.type = 'cellular'`,
		`SELECT * FROM devices WHERE properties.reported.temp = 1`,
		`SELECT * FROM devices WHERE properties.reported.temp = 21`,
		`SELECT * FROM devices WHERE properties.reported.temp = 0`,
		`SELECT * FROM devices WHERE properties.reported.temp = 1e1`,
		`SELECT * FROM devices WHERE properties.reported.temp IN [1, 2.5, 'hot', null]`,
		`SELECT * FROM devices WHERE properties.reported.temp NIN [1, 2.5, 'hot', null]`,
		`SELECT * FROM devices WHERE properties.reported.temp > 2`,
		`SELECT * FROM devices WHERE properties.reported.temp >= 2.5 AND properties.reported.temp < 21`,
		`SELECT * FROM devices WHERE properties.reported.temp != 21`,
		`SELECT * FROM devices WHERE 10 < properties.reported.temp`,
		`SELECT * FROM devices WHERE properties.reported.temp < 'z'`,
		`SELECT * FROM devices WHERE tags.critical = true`,
		`SELECT * FROM devices WHERE tags.critical < true`,
		`SELECT * FROM devices WHERE tags.critical >= false`,
		`SELECT * FROM devices WHERE tags.owner = null`,
		`SELECT * FROM devices WHERE tags.owner <= null`,
		`SELECT * FROM devices WHERE tags.owner != null`,
		`SELECT * FROM devices WHERE IS_NULL(tags.owner)`,
		`SELECT * FROM devices WHERE IS_DEFINED(tags.owner)`,
		`SELECT * FROM devices WHERE NOT IS_DEFINED(tags.location)`,
		`SELECT * FROM devices WHERE IS_DEFINED(tags.location.region.x)`,
		`SELECT * FROM devices WHERE tags.location = 'x'`,
		`SELECT * FROM devices WHERE tags.labels = ['a', 'b']`,
		`SELECT * FROM devices WHERE tags.floor = 3`,
		`SELECT * FROM devices WHERE tags.floor = '3'`,
		`SELECT * FROM devices WHERE STARTSWITH(deviceId, 'd0')`,
		`SELECT * FROM devices WHERE STARTSWITH(tags.location.plant, 'Red')`,
		`SELECT * FROM devices WHERE ENDSWITH(tags.location.plant, 'in')`,
		`SELECT * FROM devices WHERE NOT (tags.location.region = 'US')`,
		`SELECT * FROM devices WHERE NOT (tags.location.region = 'US' OR tags.critical)`,
		`SELECT * FROM devices WHERE NOT NOT tags.critical`,
		`SELECT * FROM devices WHERE tags.location.region = undefined`,
		`SELECT * FROM devices WHERE properties.reported.temp * 2 > 10`,
		`SELECT * FROM devices WHERE properties.reported.temp = properties.reported.battery`,
		`SELECT * FROM devices WHERE properties.reported.$metadata.fw.$lastUpdated > '2024'`,
		`SELECT * FROM devices WHERE IS_DEFINED(properties.reported.$metadata.empty)`,
		`SELECT * FROM devices WHERE properties.reported.note = '<a&b>' OR properties.reported.note = 'é'`,
		`SELECT * FROM devices WHERE devices.DeviceId IN ['d005', 'd010', 'nope']`,
		`SELECT * FROM devices WHERE true`,
		`SELECT * FROM devices WHERE 1 = 2`,
		`SELECT deviceId, properties.reported AS r FROM devices WHERE properties.reported.fw = '1.0'`,
		`SELECT deviceId, tags.location AS l, properties.reported.list AS list FROM devices WHERE IS_DEFINED(properties.reported.list)`,
		`SELECT properties.reported.fw AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw`,
		`SELECT properties.reported.temp AS t, COUNT() AS n, MIN(deviceId) AS first FROM devices GROUP BY properties.reported.temp ORDER BY n DESC`,
		`SELECT tags.location.region AS r, tags.floor AS f, AVG(properties.reported.temp) AS a, SUM(properties.reported.battery) AS s, MAX(properties.reported.temp) AS m FROM devices GROUP BY tags.location.region, tags.floor`,
		`SELECT tags.labels AS l, COUNT() AS n FROM devices GROUP BY tags.labels`,
		`SELECT properties.reported.empty AS e, COUNT() AS n FROM devices GROUP BY properties.reported.empty`,
		`SELECT COUNT() AS n FROM devices WHERE tags.location.plant = 'Nowhere'`,
		`SELECT COUNT() AS n, MIN(properties.reported.$metadata.$lastUpdated) AS m FROM devices`,
		`SELECT TOP 5 * FROM devices ORDER BY properties.reported.temp DESC`,
		`SELECT * FROM devices ORDER BY tags.location.plant, lastActivityTime DESC`,
		`SELECT deviceId, properties.reported.temp * 2 AS t2 FROM devices ORDER BY t2 DESC, deviceId`,
		`SELECT TOP 7 deviceId FROM devices WHERE tags.critical ORDER BY properties.reported ASC`,
	}
	for round := range 4 {
		docs := f.docs()
		for _, src := range queries {
			for _, size := range []int{1, 3, 100} {
				got, twins, _ := runAll(t, p, src, size)
				sameRows(t, f, src, got, expected(t, src, docs), twins)
			}
		}
		p.apply(f.mutate(150 + 50*round))
	}
}

// TestQueryErrors checks that a bad query or token is the caller's error.
func TestQueryErrors(t *testing.T) {
	f := newFleet(t, 1)
	f.build(10)
	p := f.projection()
	for _, c := range []struct{ query, token string }{
		{"SELECT * FORM devices", ""},
		{"SELECT * FROM devices", "!!!"},
		{"SELECT * FROM devices", token{Hash: queryHash("SELECT deviceId FROM devices"), After: "d001"}.encode()},
		{"SELECT * FROM devices ORDER BY deviceId", token{Hash: queryHash("SELECT * FROM devices ORDER BY deviceId"), After: "d001"}.encode()},
	} {
		if _, err := p.Query(t.Context(), Request{Query: c.query, Continuation: c.token}); err == nil {
			t.Errorf("%q with token %q: no error", c.query, c.token)
		}
	}
}

// TestGrowingFleet starts from an empty projection and grows it through
// changes alone past the points where values turn into bitmaps (over 1,024
// twins holding one value) and where the compression dictionary is made
// again from the fleet, then shrinks it back, checking queries against lang
// on the way.
func TestGrowingFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds thousands of twins")
	}
	f := newFleet(t, 44)
	p, err := newProjection(Config{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p.load(nil)
	g := &queryGen{r: rand.New(rand.NewPCG(8, 9))}
	check := func(n int) {
		docs := f.docs()
		for range n {
			src := g.query()
			got, twins, _ := runAll(t, p, src, 500)
			sameRows(t, f, src, got, expected(t, src, docs), twins)
		}
	}
	for len(f.twins) < 3000 {
		var changes []change
		for range 250 {
			id := f.create()
			f.change(id)
			changes = append(changes, f.changeOf(id))
		}
		p.apply(changes)
		check(15)
	}
	if n := len(p.store.codec.dicts); n != 2 {
		t.Errorf("%d compression dictionaries after growing from empty to 3,000 twins, want the blank one and one trained", n)
	}
	dense := 0
	for _, pe := range p.store.paths {
		for _, l := range pe.lists {
			if l != nil && l.bits != nil {
				dense++
			}
		}
	}
	if dense == 0 {
		t.Error("no value turned into a bitmap")
	}
	for len(f.twins) > 200 {
		var changes []change
		for _, id := range f.ids()[:300] {
			delete(f.twins, id)
			changes = append(changes, f.changeOf(id))
		}
		p.apply(changes)
		check(15)
	}
}
