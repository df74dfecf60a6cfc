package projection

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/twinhub/twinhub/queries/lang"
)

// TestPagingWhileTheFleetChanges checks the paging guarantee: between pages
// the fleet changes (creations, deletions, updates), yet no device is
// returned twice (with ORDER BY: no device that was not itself changed),
// rows keep their order across pages, and every device that matched before
// the first page and was not touched until the last one is returned. The projection pauses every few twins, as it does every 64 Ki
// twins in production, so the paths that resume after a pause run too.
func TestPagingWhileTheFleetChanges(t *testing.T) {
	f := newFleet(t, 21)
	f.build(500)
	p := f.projection()
	p.chunk = 5
	g := &queryGen{r: rand.New(rand.NewPCG(5, 6))}
	n := 200
	if testing.Short() {
		n = 60
	}
	for range n {
		src := "SELECT * FROM devices"
		if g.r.IntN(2) == 0 {
			src = "SELECT deviceId, tags.location AS l FROM devices"
		}
		if g.r.IntN(4) > 0 {
			src += " WHERE " + g.cond(g.r.IntN(3))
		}
		ordered := g.r.IntN(3) == 0
		if ordered {
			src += " ORDER BY " + g.pick(scalarPaths...) + g.pick("", " DESC")
		}
		q, err := lang.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		before := map[string]bool{}
		for _, d := range f.docs() {
			if q.Match(d) {
				before[d["deviceId"].(string)] = true
			}
		}
		touched := map[string]bool{}
		seen := map[string]bool{}
		var order []string
		tok := ""
		for pages := 0; ; pages++ {
			page, err := p.Query(t.Context(), Request{Query: src, PageSize: 1 + g.r.IntN(9), Continuation: tok})
			if err != nil {
				t.Fatalf("%s: %v", src, err)
			}
			for _, item := range page.Items {
				var row struct{ DeviceID string }
				if err := json.Unmarshal(item, &row); err != nil {
					t.Fatal(err)
				}
				// Without ORDER BY a row's position (its deviceId) never
				// moves; with it, a twin whose ORDER BY value changed
				// between pages may come again at its new position.
				if seen[row.DeviceID] && (!ordered || !touched[row.DeviceID]) {
					t.Fatalf("%s: %s returned twice", src, row.DeviceID)
				}
				seen[row.DeviceID] = true
				order = append(order, row.DeviceID)
				if !touched[row.DeviceID] && !before[row.DeviceID] {
					t.Fatalf("%s: %s returned but it did not match and was not changed", src, row.DeviceID)
				}
			}
			if page.Continuation == "" {
				break
			}
			tok = page.Continuation
			changes := f.mutate(1 + g.r.IntN(8))
			for _, c := range changes {
				touched[c.deviceID] = true
			}
			p.apply(changes)
		}
		if !ordered && !slices.IsSorted(order) {
			t.Fatalf("%s: rows not in deviceId order: %v", src, order)
		}
		for id := range before {
			if !touched[id] && !seen[id] {
				t.Fatalf("%s: %s matched throughout but was not returned (got %s)", src, id, strings.Join(order, ","))
			}
		}
	}
}

// TestQueriesDuringChanges runs queries of every shape while changes are
// applied, with the projection pausing every few twins (run it with -race).
// Every SELECT * row must satisfy the condition in the state it was
// returned in.
func TestQueriesDuringChanges(t *testing.T) {
	f := newFleet(t, 33)
	f.build(300)
	p := f.projection()
	p.chunk = 3
	var changes [][]change
	for range 60 {
		changes = append(changes, f.mutate(10))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	// Applies the prepared changes, then stops the queries.
	go func() {
		defer wg.Done()
		defer close(stop)
		for _, c := range changes {
			p.apply(c)
		}
	}()
	for w := range 3 {
		wg.Add(1)
		// Queries until the changes are applied (and at least 20 queries).
		go func() {
			defer wg.Done()
			g := &queryGen{r: rand.New(rand.NewPCG(uint64(w), 99))}
			for i := 0; ; i++ {
				select {
				case <-stop:
					if i >= 20 {
						return
					}
				default:
				}
				src := g.query()
				q, _ := lang.Parse(src)
				page, err := p.Query(t.Context(), Request{Query: src, PageSize: 50})
				if err != nil {
					t.Errorf("%s: %v", src, err)
					return
				}
				if !q.IsSelectStar() {
					continue
				}
				for _, item := range page.Items {
					if !q.Match(decodeTwin(item)) {
						t.Errorf("%s: returned a row that does not match: %s", src, item)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	// Once quiet, the projection must agree with lang again.
	docs := f.docs()
	g := &queryGen{r: rand.New(rand.NewPCG(7, 7))}
	for range 200 {
		src := g.query()
		got, twins, _ := runAll(t, p, src, 40)
		sameRows(t, f, src, got, expected(t, src, docs), twins)
	}
}
