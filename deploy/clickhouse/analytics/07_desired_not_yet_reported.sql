-- Desired properties whose latest value the device has not reported back yet (pending configuration)
SELECT device_id, path, desired, reported
FROM
(
    SELECT
        device_id,
        path,
        anyIf(value_json, section = 'desired') AS desired,
        anyIf(value_json, section = 'reported') AS reported
    FROM
    (
        -- The live leaves: each path's latest change is a set, and no
        -- object above it changed later. A replaced twin or a deleted
        -- device deletes the section root (path ''), a null deletes an
        -- object, a value replaces one; a replacement's new values come
        -- in the same event as its root delete, hence the >=.
        SELECT device_id, section, path, value_json
        FROM
        (
            SELECT
                device_id,
                section,
                path,
                argMax(value_json, stream_seq) AS value_json,
                argMax(op, stream_seq) AS last_op,
                max(stream_seq) AS seq
            FROM twin_leaves
            WHERE section IN ('desired', 'reported') AND path != ''
            GROUP BY device_id, section, path
        )
        ANY LEFT JOIN
        (
            -- The latest change of any object above each path.
            SELECT device_id, section, path, max(above_seq) AS cleared
            FROM
            (
                SELECT
                    device_id,
                    section,
                    path,
                    arrayJoin(arrayMap(i -> arrayStringConcat(arraySlice(splitByChar('.', path), 1, i), '.'),
                        range(length(splitByChar('.', path))))) AS above
                FROM twin_leaves
                WHERE section IN ('desired', 'reported') AND path != ''
                GROUP BY device_id, section, path
            )
            ALL INNER JOIN
            (
                SELECT device_id, section, path AS above, max(stream_seq) AS above_seq
                FROM twin_leaves
                WHERE section IN ('desired', 'reported')
                GROUP BY device_id, section, path
            ) USING (device_id, section, above)
            GROUP BY device_id, section, path
        ) USING (device_id, section, path)
        WHERE last_op = 'set' AND seq >= cleared
    )
    GROUP BY device_id, path
)
WHERE desired != '' AND desired != reported
ORDER BY device_id, path
