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
        -- The live leaves: each path's latest change is a set, and nothing
        -- above or below it changed later. A replaced twin or a deleted
        -- device deletes the section root (path ''), a null deletes an
        -- object, a value replaces an object and an object a value; a
        -- replacement's new values come in the same event as its root
        -- delete, hence the >=.
        SELECT device_id, section, path, value_json
        FROM
        (
            SELECT device_id, section, path, value_json, last_op, seq, cleared
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
                -- The latest change of each path's parents, up to the section root.
                SELECT device_id, section, path, max(parent_seq) AS cleared
                FROM
                (
                    SELECT
                        device_id,
                        section,
                        path,
                        arrayJoin(arrayMap(i -> arrayStringConcat(arraySlice(splitByChar('.', path), 1, i), '.'),
                            range(length(splitByChar('.', path))))) AS parent
                    FROM twin_leaves
                    WHERE section IN ('desired', 'reported') AND path != ''
                    GROUP BY device_id, section, path
                )
                ALL INNER JOIN
                (
                    SELECT device_id, section, path AS parent, max(stream_seq) AS parent_seq
                    FROM twin_leaves
                    WHERE section IN ('desired', 'reported')
                    GROUP BY device_id, section, path
                ) USING (device_id, section, parent)
                GROUP BY device_id, section, path
            ) USING (device_id, section, path)
        )
        ANY LEFT JOIN
        (
            -- The latest change below each path.
            SELECT device_id, section, parent AS path, max(stream_seq) AS below
            FROM
            (
                SELECT
                    device_id,
                    section,
                    stream_seq,
                    arrayJoin(arrayMap(i -> arrayStringConcat(arraySlice(splitByChar('.', path), 1, i), '.'),
                        range(length(splitByChar('.', path))))) AS parent
                FROM twin_leaves
                WHERE section IN ('desired', 'reported') AND path != ''
            )
            GROUP BY device_id, section, parent
        ) USING (device_id, section, path)
        WHERE last_op = 'set' AND seq >= cleared AND seq > below
    )
    GROUP BY device_id, path
)
WHERE desired != '' AND desired != reported
ORDER BY device_id, path
