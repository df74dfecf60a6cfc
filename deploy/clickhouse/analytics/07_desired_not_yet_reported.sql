-- Desired properties whose latest value the device has not reported back yet (pending configuration)
SELECT device_id, path, desired, reported
FROM
(
    SELECT
        device_id,
        path,
        argMaxIf(value_json, stream_seq, section = 'desired') AS desired,
        argMaxIf(value_json, stream_seq, section = 'reported') AS reported
    FROM twin_leaves
    WHERE section IN ('desired', 'reported') AND path != ''
    GROUP BY device_id, path
)
WHERE desired NOT IN ('', 'null') AND desired != reported
ORDER BY device_id, path
