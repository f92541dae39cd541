-- pg_softfk 0.6.0 -> 0.7.0.
--
-- softfk_status shows how far a pass in physical order (a large backlog, src/purge/scan.rs)
-- has read each child: physical_pass and physical_pass_read, appended to the view (CREATE OR
-- REPLACE VIEW keeps its grants). Everything here is what a fresh install of 0.7.0 has
-- (tests/tap/009_upgrade.pl compares the two).
-- How much of a reference's child a pass in physical order (src/purge/scan.rs) has read,
-- from 0 to 1, for softfk_status: the pass takes the references in id order and the leaves of
-- each in oid order, and the queue row holds the next block to read (a final pass reads a
-- leaf in one statement, so it moves a whole leaf at a time).
CREATE FUNCTION softfk.physical_pass_read(reference bigint, child regclass,
                                          scan_reference bigint, scan_table oid, scan_block bigint)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH leaf AS (
        SELECT t.relid::oid AS oid,
               pg_relation_size(t.relid) / current_setting('block_size')::int8 AS blocks
          FROM softfk.table_and_partitions(child) t
         WHERE t.isleaf
    )
    SELECT CASE
        WHEN scan_reference > reference THEN 1
        WHEN scan_reference < reference THEN 0
        ELSE round(coalesce(sum(CASE WHEN l.oid < scan_table THEN l.blocks
                                     WHEN l.oid = scan_table THEN least(scan_block, l.blocks)
                                     ELSE 0 END)::numeric / nullif(sum(l.blocks), 0), 1), 3)
    END
      FROM leaf l
$$;

CREATE OR REPLACE VIEW softfk_status WITH (security_barrier) AS
SELECT r.child_table  AS child,
       ca.attname     AS child_column,
       r.parent_table AS parent,
       pa.attname     AS parent_column,
       r.on_delete,
       -- Deleted parent keys whose purge is not final yet, and whole-table purges queued
       -- (TRUNCATE of the parent, sweeps).
       coalesce(q.pending_keys, 0)        AS pending_keys,
       coalesce(q.pending_full_scans, 0)  AS pending_full_scans,
       pg_catalog.now() - q.oldest        AS oldest_pending_age,
       coalesce(t.rows_deleted, 0)        AS rows_deleted,
       coalesce(t.rows_nulled, 0)         AS rows_nulled,
       coalesce(t.rows_archived, 0)       AS rows_archived,
       t.last_run_at,
       t.last_error,
       t.last_error_at,
       -- Who purges this database now, and since when (the same on every row).
       w.state AS purge_worker,
       w.since AS purge_worker_since,
       -- The purge's recent pace, over the runs that finished in the last 15 minutes: keys
       -- of this database per second of run time, and this reference's rows; and the time
       -- the pending keys would take at that pace.
       rate.keys_per_second,
       rate.rows_per_second,
       CASE WHEN q.pending_keys > 0 AND rate.keys_per_second > 0
            THEN pg_catalog.make_interval(secs => q.pending_keys / rate.keys_per_second)
       END AS estimated_drain,
       -- Why the oldest pending key waits, when keys wait.
       CASE
           WHEN q.oldest IS NULL THEN NULL
           WHEN w.state NOT IN ('connected', 'starting') THEN 'a purge worker: ' || w.state
           -- A lock on the child that the purge's DELETE or UPDATE would wait for: the worker
           -- gives way to it (src/purge/table_locks.rs).
           WHEN lk.held IS NOT NULL THEN 'the ' || lk.held || ', which the purge gives way to'
           WHEN o.holder IS NOT NULL
               THEN 'its final pass, for the ' || o.holder || ', which began before the deletion'
           WHEN t.last_error_at >= q.oldest THEN 'a retry after the error in last_error'
           ELSE 'its turn'
       END AS waiting_for,
       -- A pass in physical order over this reference's child (a large backlog,
       -- src/purge/scan.rs): 'first' or 'final', and how much of the child it has read, from 0
       -- to 1. pending_keys falls only when the final pass ends; this moves as the pass goes.
       p.pass AS physical_pass,
       p.read AS physical_pass_read
  FROM softfk.reference r
  JOIN pg_catalog.pg_class c ON c.oid = r.child_table
  JOIN pg_catalog.pg_attribute ca ON ca.attrelid = r.child_table AND ca.attnum = r.child_attnum
  JOIN pg_catalog.pg_attribute pa ON pa.attrelid = r.parent_table AND pa.attnum = r.parent_attnum
  LEFT JOIN softfk.purge_total t ON t.reference_id = r.id
  LEFT JOIN LATERAL (
        SELECT sum(pg_catalog.cardinality(d.keys)) AS pending_keys,
               count(*) FILTER (WHERE d.keys IS NULL) AS pending_full_scans,
               min(d.deleted_at) AS oldest
          FROM softfk.deletion d
         WHERE d.parent_table = r.parent_table AND d.parent_column = r.parent_column
           AND (d.reference_id IS NULL OR d.reference_id = r.id)) q ON true
 CROSS JOIN softfk.purge_worker() w
 LEFT JOIN LATERAL (
        SELECT l.mode || ' on ' || l.relation::pg_catalog.regclass::text || ' '
               || CASE WHEN l.granted THEN 'held' ELSE 'awaited' END || ' by PID ' || l.pid AS held
          FROM pg_catalog.pg_locks l
         WHERE q.oldest IS NOT NULL AND l.locktype = 'relation'
           AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                              WHERE d.datname = pg_catalog.current_database())
           AND l.relation IN (SELECT p.relid FROM softfk.table_and_partitions(r.child_table) p)
           AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
           AND l.pid <> pg_catalog.pg_backend_pid()
         ORDER BY l.granted DESC, l.pid LIMIT 1) lk ON true
 LEFT JOIN LATERAL (
        SELECT pg_catalog.sum(run.keys_purged)
                 / nullif(pg_catalog.sum(extract(epoch FROM run.finished_at - run.started_at)), 0)
                   AS keys_per_second,
               pg_catalog.sum(coalesce((run.rows_by_reference OPERATOR(pg_catalog.->>) r.id::text)::bigint, 0))
                 / nullif(pg_catalog.sum(extract(epoch FROM run.finished_at - run.started_at)), 0)
                   AS rows_per_second
          FROM softfk.purge_run run
         WHERE run.finished_at > pg_catalog.now() - interval '15 minutes' AND run.batches > 0) rate ON true
 LEFT JOIN LATERAL (
        SELECT CASE WHEN d.final_pass AND d.xid_cluster = softfk.system_identifier()
                    THEN softfk.horizon_holder(d.final_after) END AS holder
          FROM softfk.deletion d
         WHERE d.parent_table = r.parent_table AND d.parent_column = r.parent_column
           AND (d.reference_id IS NULL OR d.reference_id = r.id)
         ORDER BY d.deleted_at, d.id LIMIT 1) o ON true
 LEFT JOIN LATERAL (
        SELECT CASE WHEN d.final_pass THEN 'final' ELSE 'first' END AS pass,
               softfk.physical_pass_read(r.id, r.child_table, d.scan_reference,
                                         d.scan_table::oid, d.scan_block) AS read
          FROM softfk.deletion d
         WHERE d.parent_table = r.parent_table AND d.parent_column = r.parent_column
           AND (d.reference_id IS NULL OR d.reference_id = r.id)
           AND d.scan_reference IS NOT NULL
           -- (The purge reads no child of a 'no action' reference.)
           AND r.on_delete <> 'no action'
         ORDER BY d.deleted_at, d.id LIMIT 1) p ON true
 -- Everyone sees the references of the child tables they own (a superuser: all).
 WHERE pg_catalog.pg_has_role(c.relowner, 'USAGE')
 ORDER BY r.child_table::text, ca.attname;
COMMENT ON VIEW softfk_status IS 'Per soft reference: the purge''s backlog (keys not final yet, oldest age), what it has done (rows deleted, nulled, archived; last run; last error), who purges this database now (purge_worker: connected, starting, waiting for a purge worker or a background worker slot, not connected), the recent pace (keys and rows per second) with the estimated time to drain, why the oldest pending key waits (waiting_for), and how far a pass in physical order has read the child (physical_pass, physical_pass_read).';
