-- Twin changes per hour over the last 24 hours, by source (device or backend), with the devices involved
SELECT
    toStartOfHour(event_time) AS hour,
    source,
    count() AS changes,
    uniqExact(device_id) AS devices
FROM twin_events
WHERE event_time >= now() - INTERVAL 1 DAY AND op IN ('updateTwin', 'replaceTwin')
GROUP BY hour, source
ORDER BY hour, source
