-- Seconds from a desired change to the device reporting the same value at the same path, per property
SELECT
    path,
    count() AS changes,
    round(avg(latency), 3) AS avg_seconds,
    round(max(latency), 3) AS max_seconds
FROM
(
    SELECT device_id, path, desired_ns, (min(reported_ns) - desired_ns) / 1e9 AS latency
    FROM
    (
        SELECT device_id, path, value_json, event_time_ns AS desired_ns
        FROM twin_leaves
        WHERE section = 'desired' AND op = 'set'
    )
    ALL INNER JOIN
    (
        SELECT device_id, path, value_json, event_time_ns AS reported_ns
        FROM twin_leaves
        WHERE section = 'reported' AND op = 'set'
    ) USING (device_id, path, value_json)
    WHERE reported_ns >= desired_ns
    GROUP BY device_id, path, desired_ns
)
GROUP BY path
ORDER BY path
