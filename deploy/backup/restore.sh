#!/bin/sh
# Restore what backup.sh saved: the data directory into a directory that
# does not exist yet (or is empty), and the ClickHouse tables into a database
# that does not have them yet. Restore both before the hub starts, so its
# history sink goes on from where the backup ends.
#
#   TWINHUB_DATA_DIR=./data CLICKHOUSE_HOST=127.0.0.1 CLICKHOUSE_PORT=9000 \
#     deploy/backup/restore.sh BACKUP_DIR
#
# The variables are backup.sh's. The database is created if it is missing;
# a table that already exists stops the restore before any row is inserted
# into it, so rows are never doubled.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BACKUP_DIR" >&2; exit 2; }
in=$1

if [ -n "${TWINHUB_DATA_DIR:-}" ]; then
	[ -f "$in/data.tar.gz" ] || { echo "$in/data.tar.gz is missing" >&2; exit 1; }
	if [ -d "$TWINHUB_DATA_DIR" ] && [ -n "$(ls -A "$TWINHUB_DATA_DIR")" ]; then
		echo "TWINHUB_DATA_DIR $TWINHUB_DATA_DIR is not empty: restore into a new directory" >&2
		exit 1
	fi
	mkdir -p "$TWINHUB_DATA_DIR"
	chmod 700 "$TWINHUB_DATA_DIR"
	tar -C "$TWINHUB_DATA_DIR" -xzf "$in/data.tar.gz"
	echo "$in/data.tar.gz -> data directory $TWINHUB_DATA_DIR"
fi

if [ -n "${CLICKHOUSE_HOST:-}" ]; then
	[ -f "$in/tables" ] || { echo "$in/tables is missing" >&2; exit 1; }
	db=${CLICKHOUSE_DATABASE:-twinhub}
	ch() {
		clickhouse-client --host "$CLICKHOUSE_HOST" --port "${CLICKHOUSE_PORT:-9000}" \
			${CLICKHOUSE_USER:+--user "$CLICKHOUSE_USER"} ${CLICKHOUSE_PASSWORD:+--password "$CLICKHOUSE_PASSWORD"} "$@"
	}
	ch --query "CREATE DATABASE IF NOT EXISTS $db"
	for t in $(cat "$in/tables"); do
		# The saved statement names the database it came from; create the
		# table in $db instead.
		ch --database "$db" --query "$(sed "1s/^CREATE TABLE [^ (]*/CREATE TABLE $db.$t/" "$in/$t.sql")"
		ch --query "INSERT INTO $db.$t FORMAT Native" < "$in/$t.native"
		echo "$in/$t.native -> ClickHouse $db.$t: $(ch --query "SELECT count() FROM $db.$t") rows"
	done
fi
