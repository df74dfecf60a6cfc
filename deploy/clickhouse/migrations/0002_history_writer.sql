-- 0002: the history writer fence. Every twinhub instance runs the history
-- sink and one at a time writes. A sink that becomes the writer adds a row
-- here (epoch = the highest + 1); every insert of a sink into twin_events and
-- twin_leaves fails unless that sink's row is the newest (highest epoch, then
-- highest writer), so a sink that another has replaced can write nothing more.
CREATE TABLE IF NOT EXISTS twin_history_writer
(
    epoch  UInt64,
    writer String,
    since  DateTime('UTC')
)
ENGINE = MergeTree
ORDER BY (epoch, writer);
