-- Live devices that have not reported anything for an hour (clickhouse-client prints last_report 0000-00-00 00:00:00 for never)
SELECT
    device_id,
    maxIf(event_time, source = 'device') AS last_report
FROM twin_events
GROUP BY device_id
HAVING argMax(op, stream_seq) != 'deleteDevice' AND last_report < now() - INTERVAL 1 HOUR
ORDER BY last_report, device_id
