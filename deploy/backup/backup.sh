#!/bin/sh
# Back up a twinhub: the stopped hub's data directory (JetStream's store with
# the twins, policies and change events, and twinhub's own files) and the
# ClickHouse history database (each table's CREATE statement and its rows in
# ClickHouse's Native format, which every version since 18.16 reads).
#
#   TWINHUB_DATA_DIR=./data CLICKHOUSE_HOST=127.0.0.1 CLICKHOUSE_PORT=9000 \
#     deploy/backup/backup.sh BACKUP_DIR
#
# TWINHUB_DATA_DIR   data directory of the stopped hub (`twinhub run` holds a
#                    lock on it while it runs); empty: not backed up
# CLICKHOUSE_HOST    ClickHouse to export history from; empty: not backed up
# CLICKHOUSE_PORT    its native port (9000); CLICKHOUSE_USER and
#                    CLICKHOUSE_PASSWORD when it asks for them
# CLICKHOUSE_DATABASE  the history database (twinhub)
#
# ClickHouse may keep running, and so may the hub while only ClickHouse is
# exported: rows written meanwhile are simply not in the backup.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BACKUP_DIR" >&2; exit 2; }
out=$1
mkdir -p "$out"

if [ -n "${TWINHUB_DATA_DIR:-}" ]; then
	[ -d "$TWINHUB_DATA_DIR" ] || { echo "TWINHUB_DATA_DIR $TWINHUB_DATA_DIR is not a directory" >&2; exit 1; }
	# A local ClickHouse (--clickhouse-local) is exported below, not copied.
	tar -C "$TWINHUB_DATA_DIR" --exclude=./clickhouse -czf "$out/data.tar.gz" .
	echo "data directory $TWINHUB_DATA_DIR -> $out/data.tar.gz"
fi

if [ -n "${CLICKHOUSE_HOST:-}" ]; then
	db=${CLICKHOUSE_DATABASE:-twinhub}
	ch() {
		clickhouse-client --host "$CLICKHOUSE_HOST" --port "${CLICKHOUSE_PORT:-9000}" \
			${CLICKHOUSE_USER:+--user "$CLICKHOUSE_USER"} ${CLICKHOUSE_PASSWORD:+--password "$CLICKHOUSE_PASSWORD"} "$@"
	}
	ch --query "SHOW TABLES FROM $db" > "$out/tables"
	for t in $(cat "$out/tables"); do
		ch --query "SHOW CREATE TABLE $db.$t FORMAT TSVRaw" > "$out/$t.sql"
		ch --query "SELECT * FROM $db.$t FORMAT Native" > "$out/$t.native"
		echo "ClickHouse $db.$t: $(ch --query "SELECT count() FROM $db.$t") rows -> $out/$t.native"
	done
fi
