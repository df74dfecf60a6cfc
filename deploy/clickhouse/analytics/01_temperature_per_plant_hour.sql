-- Average reported temperature per plant and hour, last 7 days (plant from each device's latest tags.location.plant)
SELECT
    plant,
    toStartOfHour(event_time) AS hour,
    round(avg(value_number), 2) AS avg_temperature,
    count() AS reports
FROM twin_leaves
ALL INNER JOIN
(
    -- The latest tags.location.plant of each device; a change of tags.location
    -- or a replaced or deleted tags section (a delete of path '') clears it.
    -- Within one event the set comes after the section delete, hence the
    -- (stream_seq, path) order.
    SELECT device_id, argMax(if(path = 'location.plant', ifNull(value_string, ''), ''), (stream_seq, path)) AS plant
    FROM twin_leaves
    WHERE section = 'tags' AND path IN ('location.plant', 'location', '')
    GROUP BY device_id
    HAVING plant != ''
) USING device_id
WHERE section = 'reported' AND path = 'temperature' AND value_number IS NOT NULL
  AND event_time >= now() - INTERVAL 7 DAY
GROUP BY plant, hour
ORDER BY plant, hour
