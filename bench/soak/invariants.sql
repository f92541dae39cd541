-- After the load, once the queue is drained: one row per invariant, holds = true.
SELECT 'queue drained' AS invariant, count(*) = 0 AS holds, count(*) AS found FROM softfk.deletion
UNION ALL
SELECT 'no orphan in any validated child', sum(orphan_rows) = 0, sum(orphan_rows) FROM orphan_report()
UNION ALL
-- Every purged, nulled or archived row was written for a user generation that was deleted.
SELECT 'no row of a live user purged', count(*) = 0, count(*)
  FROM soak.purged p
 WHERE NOT EXISTS (SELECT FROM soak.user_deleted d WHERE d.user_id = p.user_id AND d.generation = p.generation)
UNION ALL
SELECT 'no row purged twice', count(*) = 0, count(*)
  FROM (SELECT child, child_id FROM soak.purged GROUP BY 1, 2 HAVING count(*) > 1) twice
UNION ALL
SELECT 'every archived certificate logged once', a.n = p.n, a.n - p.n
  FROM (SELECT count(*) AS n FROM softfk.archived_row) a,
       (SELECT count(*) AS n FROM soak.purged WHERE child = 'certificate') p
UNION ALL
SELECT 'no purge run left running', count(*) = 0, count(*) FROM softfk.purge_run WHERE finished_at IS NULL
UNION ALL
SELECT 'every run ended completed, partial or failed', count(*) = 0, count(*)
  FROM softfk.purge_run WHERE status NOT IN ('completed', 'partial', 'failed');
