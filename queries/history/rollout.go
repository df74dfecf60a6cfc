package history

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// MaxRolloutPoints bounds the instants of one rollout query.
const MaxRolloutPoints = 500

// Rollout answers a rollout query from twin_leaves in one ClickHouse query:
// for each instant and device, the newest desired and reported value at the
// path (a delete of the path or of a parent clears it), compared as JSON.
// It reads what the history sink has written, so the last second or so
// before a query may be missing. Devices deleted and created again count
// once per generation.
func (r *Reader) Rollout(ctx context.Context, q pipeline.RolloutQuery) ([]pipeline.RolloutPoint, error) {
	switch {
	case q.Path == "" || strings.HasPrefix(q.Path, ".") || strings.HasSuffix(q.Path, ".") || strings.Contains(q.Path, ".."):
		return nil, fmt.Errorf("%w: path must name a desired property, e.g. firmware.version, got %q", pipeline.ErrInvalidQuery, q.Path)
	case q.Points < 2 || q.Points > MaxRolloutPoints:
		return nil, fmt.Errorf("%w: points must be between 2 and %d, got %d", pipeline.ErrInvalidQuery, MaxRolloutPoints, q.Points)
	case q.From.IsZero() || q.To.IsZero() || !q.From.Before(q.To):
		return nil, fmt.Errorf("%w: from and to must be set, from before to", pipeline.ErrInvalidQuery)
	}
	// The path and each parent, down to the section's root (""): a delete of
	// any of them clears the property.
	parents := []string{"", q.Path}
	for i := range q.Path {
		if q.Path[i] == '.' {
			parents = append(parents, q.Path[:i])
		}
	}
	step := q.To.Sub(q.From) / time.Duration(q.Points-1)
	instants := make([]int64, q.Points)
	for i := range instants {
		instants[i] = q.From.Add(time.Duration(i) * step).UnixNano()
	}
	// The query's values are bound (clickhouse-go renders them client side):
	// the path twice, the instants as an array, the parents as an array.
	value := "if(op = 'set' AND path = @path, value_json, '')"
	query := `SELECT toInt64(t), countIf(d != '' AND d = r) AS matching, countIf(d != '') AS targeted
FROM
(
    SELECT t, device_id, generation_id,
        argMaxIf(` + value + `, (stream_seq, path), section = 'desired') AS d,
        argMaxIf(` + value + `, (stream_seq, path), section = 'reported') AS r
    FROM ` + leavesTable + `
    ARRAY JOIN @instants AS t
    WHERE section IN ('desired', 'reported') AND has(@parents, path) AND event_time_ns <= t
    GROUP BY t, device_id, generation_id
)
GROUP BY t
ORDER BY t`
	rows, err := r.conn.Query(ctx, query, clickhouse.Named("path", q.Path), clickhouse.Named("instants", instants),
		clickhouse.Named("parents", parents))
	if err != nil {
		return nil, fmt.Errorf("reading the rollout of desired %s from ClickHouse: %w", q.Path, err)
	}
	defer rows.Close()
	got := map[int64]pipeline.RolloutPoint{}
	for rows.Next() {
		var t int64
		var p pipeline.RolloutPoint
		if err := rows.Scan(&t, &p.Matching, &p.Targeted); err != nil {
			return nil, fmt.Errorf("reading the rollout of desired %s from ClickHouse: %w", q.Path, err)
		}
		got[t] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the rollout of desired %s from ClickHouse: %w", q.Path, err)
	}
	// Instants before any change have no row: nothing targeted yet.
	out := make([]pipeline.RolloutPoint, q.Points)
	for i, ns := range instants {
		out[i] = got[ns]
		out[i].Time = twin.FormatTime(time.Unix(0, ns))
	}
	return out, nil
}
