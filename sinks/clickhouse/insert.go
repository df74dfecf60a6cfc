package clickhouse

import (
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// WriterTable is the history writer fence (migration 0002): one row per
// sink that became the writer. The newest row (highest epoch, then highest
// writer) names the one sink whose inserts ClickHouse accepts.
const WriterTable = "twin_history_writer"

// col is a column of a history table and its ClickHouse type.
type col struct{ name, typ string }

// The columns the sink writes, in the order the append functions fill them.
var (
	eventColumns = []col{
		{"device_id", "String"}, {"generation_id", "String"}, {"version", "Int64"}, {"op", "String"},
		{"source", "String"}, {"etag", "String"}, {"desired_version", "Int64"}, {"reported_version", "Int64"},
		{"event_time", "DateTime('UTC')"}, {"event_time_ns", "Int64"}, {"ingest_time", "DateTime('UTC')"},
		{"command_id", "String"}, {"status", "String"}, {"patch", "String"}, {"stream_seq", "UInt64"},
	}
	leafColumns = []col{
		{"device_id", "String"}, {"generation_id", "String"}, {"version", "Int64"},
		{"event_time", "DateTime('UTC')"}, {"event_time_ns", "Int64"},
		{"section", "Enum8('tags' = 1, 'desired' = 2, 'reported' = 3)"}, {"path", "String"},
		{"op", "Enum8('set' = 1, 'delete' = 2)"}, {"value_json", "String"},
		{"value_type", "Enum8('null' = 0, 'number' = 1, 'string' = 2, 'bool' = 3, 'array' = 4, 'object' = 5)"},
		{"value_number", "Nullable(Float64)"}, {"value_string", "Nullable(String)"}, {"value_bool", "Nullable(UInt8)"},
		{"stream_seq", "UInt64"},
	}
)

// rowsTable is the name of the external table that carries a batch's rows
// to the server with the insert.
const rowsTable = "_rows"

// fencedInsert is the insert of a batch into table: the rows travel as an
// external table and are copied only if writer still holds the fence when
// the insert starts; otherwise throwIf fails the whole insert (code 395)
// and nothing is written. Checked inside the insert, the fence needs no
// exclusivity from NATS: see the package documentation.
func fencedInsert(table string, cols []col, writer string) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	list := strings.Join(names, ", ")
	return "INSERT INTO " + table + " (" + list + ") SELECT " + list + " FROM " + rowsTable +
		" WHERE throwIf((SELECT writer FROM " + WriterTable + " ORDER BY epoch DESC, writer DESC LIMIT 1) != '" +
		writer + "') = 0"
}

// acquireWriter makes writer the newest row of the fence.
func acquireWriter(writer string) string {
	return "INSERT INTO " + WriterTable + " (epoch, writer, since) SELECT max(epoch) + 1, '" + writer + "', now() FROM " + WriterTable
}

// codeFenced is ClickHouse's error code for a throwIf that fired: in a
// fenced insert, another sink had become the writer.
const codeFenced = 395

// newRowsTable builds the external table for cols.
func newRowsTable(cols []col) (*ext.Table, error) {
	opts := make([]func(*ext.Table) error, len(cols))
	for i, c := range cols {
		opts[i] = ext.Column(c.name, column.Type(c.typ))
	}
	return ext.NewTable(rowsTable, opts...)
}

// eventRowsTable fills the events' external table column by column (much
// cheaper than row appends).
func eventRowsTable(rows []eventRow, ingest time.Time) (*ext.Table, error) {
	n := len(rows)
	var (
		deviceID, generationID, op, source, etag = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		commandID, status, patch                 = make([]string, n), make([]string, n), make([]string, n)
		version, desiredVersion, reportedVersion = make([]int64, n), make([]int64, n), make([]int64, n)
		eventTime, ingestTime                    = make([]time.Time, n), make([]time.Time, n)
		eventTimeNS                              = make([]int64, n)
		seq                                      = make([]uint64, n)
	)
	for i, r := range rows {
		deviceID[i], generationID[i], op[i], source[i], etag[i] = r.deviceID, r.generationID, r.op, r.source, r.etag
		commandID[i], status[i], patch[i] = r.commandID, r.status, r.patch
		version[i], desiredVersion[i], reportedVersion[i] = r.version, r.desiredVersion, r.reportedVersion
		eventTime[i], eventTimeNS[i], ingestTime[i] = r.time, r.time.UnixNano(), ingest
		seq[i] = r.seq
	}
	return fillTable(eventColumns, deviceID, generationID, version, op, source, etag, desiredVersion, reportedVersion,
		eventTime, eventTimeNS, ingestTime, commandID, status, patch, seq)
}

// leafRowsTable fills the leaves' external table.
func leafRowsTable(rows []eventRow) (*ext.Table, error) {
	n := 0
	for _, r := range rows {
		n += len(r.leaves)
	}
	var (
		deviceID, generationID          = make([]string, 0, n), make([]string, 0, n)
		version, eventTimeNS            = make([]int64, 0, n), make([]int64, 0, n)
		eventTime                       = make([]time.Time, 0, n)
		section, path, op, vjson, vtype = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		number                          = make([]*float64, 0, n)
		str                             = make([]*string, 0, n)
		boolean                         = make([]*uint8, 0, n)
		seq                             = make([]uint64, 0, n)
	)
	for _, r := range rows {
		ns := r.time.UnixNano()
		for _, l := range r.leaves {
			deviceID, generationID = append(deviceID, r.deviceID), append(generationID, r.generationID)
			version, eventTime, eventTimeNS = append(version, r.version), append(eventTime, r.time), append(eventTimeNS, ns)
			section, path, op = append(section, l.Section), append(path, l.Path), append(op, l.Op)
			vjson, vtype = append(vjson, l.JSON), append(vtype, l.Type)
			number, str, boolean = append(number, l.Number), append(str, l.String), append(boolean, l.Bool)
			seq = append(seq, r.seq)
		}
	}
	return fillTable(leafColumns, deviceID, generationID, version, eventTime, eventTimeNS, section, path, op, vjson, vtype,
		number, str, boolean, seq)
}

func fillTable(cols []col, values ...any) (*ext.Table, error) {
	tbl, err := newRowsTable(cols)
	if err != nil {
		return nil, err
	}
	for i, v := range values {
		if _, err := tbl.Block().Columns[i].Append(v); err != nil {
			return nil, fmt.Errorf("column %s: %w", cols[i].name, err)
		}
	}
	return tbl, nil
}
