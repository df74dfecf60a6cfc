-- Devices whose reported firmware.version changed in the last 24 hours (previous is '' for a first report)
SELECT
    device_id,
    argMaxIf(ifNull(value_string, ''), stream_seq, event_time < now() - INTERVAL 1 DAY) AS previous,
    argMax(ifNull(value_string, ''), stream_seq) AS current,
    max(event_time) AS changed_at
FROM twin_leaves
WHERE section = 'reported' AND path = 'firmware.version' AND op = 'set'
GROUP BY device_id
HAVING changed_at >= now() - INTERVAL 1 DAY AND previous != current
ORDER BY changed_at DESC, device_id
