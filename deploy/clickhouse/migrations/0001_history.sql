-- 0001: twin change history. ClickHouse 18.16 syntax (no DateTime64, Map,
-- JSON, TTL or codecs), which current releases run unchanged.

-- One row per change event. stream_seq is the event's sequence in the
-- JetStream stream TWINHUB_EVENTS: the sink's exactly-once watermark.
CREATE TABLE IF NOT EXISTS twin_events
(
    device_id        String,
    generation_id    String,
    version          Int64,
    op               String,
    source           String,
    etag             String,
    desired_version  Int64,
    reported_version Int64,
    event_time       DateTime('UTC'),
    event_time_ns    Int64,
    ingest_time      DateTime('UTC'),
    command_id       String,
    status           String,
    patch            String,
    stream_seq       UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (device_id, generation_id, version);

-- One row per changed leaf of a change event: a property set (op = 'set')
-- or deleted (op = 'delete'); a replaced or deleted section is a delete of
-- its root (path = ''). The value is kept as JSON text and, by type, in the
-- typed columns (NULL when the value has another type).
CREATE TABLE IF NOT EXISTS twin_leaves
(
    device_id      String,
    generation_id  String,
    version        Int64,
    event_time     DateTime('UTC'),
    event_time_ns  Int64,
    section        Enum8('tags' = 1, 'desired' = 2, 'reported' = 3),
    path           String,
    op             Enum8('set' = 1, 'delete' = 2),
    value_json     String,
    value_type     Enum8('null' = 0, 'number' = 1, 'string' = 2, 'bool' = 3, 'array' = 4, 'object' = 5),
    value_number   Nullable(Float64),
    value_string   Nullable(String),
    value_bool     Nullable(UInt8),
    stream_seq     UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (section, path, device_id, generation_id, version);
