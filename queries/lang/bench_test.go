package lang

import (
	"fmt"
	"slices"
	"testing"
)

// benchFleet generates n twins shaped like decoded service JSON.
func benchFleet(n int) []doc {
	regions := []string{"US", "EU", "APAC", "LATAM"}
	docs := make([]doc, n)
	for i := range docs {
		docs[i] = doc{
			"deviceId":         fmt.Sprintf("dev-%06d", i),
			"etag":             "AAAAAAAAAAE=",
			"version":          float64(i % 50),
			"status":           []string{"enabled", "enabled", "enabled", "enabled", "disabled"}[i%5],
			"connectionState":  []string{"Connected", "Disconnected"}[i%2],
			"lastActivityTime": "2024-05-01T10:00:03.1234567Z",
			"tags": doc{"location": doc{
				"region": regions[i%len(regions)],
				"plant":  fmt.Sprintf("plant-%d", i%40),
			}},
			"properties": doc{
				"desired": doc{"telemetryConfig": doc{"sendFrequency": "5m"}, "$version": 2.0},
				"reported": doc{
					"fw":           fmt.Sprintf("1.%d", i%8),
					"temp":         float64(i%400) / 10,
					"battery":      float64(i % 100),
					"connectivity": doc{"type": "cellular"},
					"$version":     3.0,
				},
			},
		}
	}
	return docs
}

// BenchmarkExecuteGroupBy measures a grouped aggregate with a WHERE over
// 100,000 twins; ns/doc is the cost per twin read.
func BenchmarkExecuteGroupBy(b *testing.B) {
	docs := benchFleet(100_000)
	q, err := Parse(`SELECT properties.reported.fw AS fw, COUNT() AS n, AVG(properties.reported.temp) AS t, MAX(properties.reported.battery) AS b
		FROM devices WHERE status = 'enabled' GROUP BY properties.reported.fw ORDER BY n DESC`)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		rows, err := q.Execute(slices.Values(docs))
		if err != nil || len(rows) != 8 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(docs)), "ns/doc")
}

// BenchmarkExecuteWhere measures a SELECT * with a two-term WHERE over
// 100,000 twins, the seed sample's query shape.
func BenchmarkExecuteWhere(b *testing.B) {
	docs := benchFleet(100_000)
	q, err := Parse(`SELECT * FROM devices WHERE tags.location.plant = 'plant-7' AND properties.reported.connectivity.type = 'cellular'`)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Execute(slices.Values(docs)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(docs)), "ns/doc")
}

// BenchmarkParse measures parsing a query with every clause.
func BenchmarkParse(b *testing.B) {
	const src = `SELECT TOP 10 tags.location.region AS r, COUNT() AS n, AVG(properties.reported.temp) AS t FROM devices
		WHERE STARTSWITH(deviceId, 'dev-') AND properties.reported.fw IN ['1.0', '1.1'] AND NOT (status = 'disabled')
		GROUP BY tags.location.region ORDER BY n DESC`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(src); err != nil {
			b.Fatal(err)
		}
	}
}
