package clickhouse

import (
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Column lists are explicit: ClickHouse 18.16 rejects a batch insert without one.
const (
	insertEvents = "INSERT INTO " + EventsTable + " (device_id, generation_id, version, op, source, etag, " +
		"desired_version, reported_version, event_time, event_time_ns, ingest_time, command_id, status, patch, stream_seq)"
	insertLeaves = "INSERT INTO " + LeavesTable + " (device_id, generation_id, version, event_time, event_time_ns, " +
		"section, path, op, value_json, value_type, value_number, value_string, value_bool, stream_seq)"
)

// appendEvents fills b column by column (much cheaper than row appends).
func appendEventColumns(b driver.Batch, rows []eventRow, ingest time.Time) error {
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
	return appendColumns(b, deviceID, generationID, version, op, source, etag, desiredVersion, reportedVersion,
		eventTime, eventTimeNS, ingestTime, commandID, status, patch, seq)
}

func appendLeafColumns(b driver.Batch, rows []eventRow) error {
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
	return appendColumns(b, deviceID, generationID, version, eventTime, eventTimeNS, section, path, op, vjson, vtype,
		number, str, boolean, seq)
}

func appendColumns(b driver.Batch, cols ...any) error {
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}
