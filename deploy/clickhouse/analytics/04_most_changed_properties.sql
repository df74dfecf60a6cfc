-- The 20 most frequently changing properties over the last 7 days, and on how many devices
SELECT
    section,
    path,
    count() AS changes,
    uniqExact(device_id) AS devices
FROM twin_leaves
WHERE event_time >= now() - INTERVAL 7 DAY AND path != ''
GROUP BY section, path
ORDER BY changes DESC, section, path
LIMIT 20
