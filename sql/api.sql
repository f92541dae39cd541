-- The pg_softfk SQL API. Runs last in the extension script. The functions are implemented in
-- Rust (src/); they are declared here so their SQL types, defaults and documentation sit
-- together. None of them is STRICT: a NULL argument is an error (SQLSTATE 22004), not a
-- silent NULL result. Each pins search_path to the catalogs: their queries run partly as the
-- extension's owner or the child's owner, and must not resolve a name through schemas the
-- caller controls.

CREATE FUNCTION softfk_add(
    child         regclass,
    child_column  name,
    parent        regclass,
    parent_column name DEFAULT NULL,
    on_delete     text DEFAULT 'cascade',
    validate      text DEFAULT 'deferred')
RETURNS void VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'softfk_add_wrapper';
COMMENT ON FUNCTION softfk_add(regclass, name, regclass, name, text, text) IS
'Register child.child_column as a soft reference to parent.parent_column (default: the parent''s single-column primary key). on_delete: cascade | set null | archive | no action; validate: deferred | immediate | off.';

CREATE FUNCTION softfk_alter(
    child         regclass,
    child_column  name,
    on_delete     text DEFAULT NULL,
    validate      text DEFAULT NULL)
RETURNS void VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'softfk_alter_wrapper';
COMMENT ON FUNCTION softfk_alter(regclass, name, text, text) IS
'Change the on_delete action or the validate mode of the soft reference on child.child_column; a NULL argument keeps that setting. Changing validate replaces the check triggers; existing rows are not re-checked (orphan_report() finds them).';

CREATE FUNCTION softfk_drop(child regclass, child_column name)
RETURNS void VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'softfk_drop_wrapper';
COMMENT ON FUNCTION softfk_drop(regclass, name) IS
'Remove the soft reference on child.child_column, and its check triggers.';

CREATE FUNCTION orphan_report()
RETURNS TABLE (
    child         regclass,
    child_column  text,
    parent        regclass,
    parent_column text,
    orphan_rows   bigint,
    orphan_keys   bigint,
    sample_keys   text[],
    rows_examined bigint,
    elapsed_ms    double precision)
VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orphan_report_wrapper';
COMMENT ON FUNCTION orphan_report() IS
'One row per soft reference: child rows whose non-NULL key has no parent row (orphan_rows), how many distinct such keys (orphan_keys), the ten smallest of them, how many child rows were examined, and how long it took.';

CREATE FUNCTION softfk.orphan_rows_query(child regclass, child_column name)
RETURNS text STABLE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orphan_rows_query_wrapper';
COMMENT ON FUNCTION softfk.orphan_rows_query(regclass, name) IS
'The anti-join behind orphan_rows(); built by the same query builder as orphan_report().';

CREATE FUNCTION orphan_rows(child regclass, child_column name)
RETURNS TABLE (child_table regclass, ctid tid, key text, child_row jsonb)
VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Runs with the caller's rights: only someone who can read the child (and the parent)
    -- sees its rows.
    RETURN QUERY EXECUTE softfk.orphan_rows_query(child, child_column);
END $$;
COMMENT ON FUNCTION orphan_rows(regclass, name) IS
'The dangling rows of one soft reference: where the child row is (its table or partition, and ctid), its key as text, and the whole row as jsonb.';

CREATE VIEW softfk_references AS
SELECT r.child_table  AS child,
       ca.attname     AS child_column,
       r.parent_table AS parent,
       pa.attname     AS parent_column,
       r.on_delete,
       r.validate,
       -- The check triggers, by the names SET CONSTRAINTS takes.
       ARRAY(SELECT t.trigger_name FROM softfk.check_triggers(r.id) t) AS check_triggers,
       r.created_at
  FROM softfk.reference r
  JOIN pg_catalog.pg_attribute ca ON ca.attrelid = r.child_table AND ca.attnum = r.child_attnum
  JOIN pg_catalog.pg_attribute pa ON pa.attrelid = r.parent_table AND pa.attnum = r.parent_attnum
 ORDER BY r.child_table::text, ca.attname;
COMMENT ON VIEW softfk_references IS 'Every soft reference, with current table and column names.';
-- Catalog-level facts (which column references which), readable by all as pg_constraint is;
-- softfk_revert, run by a child's owner, reads it.
GRANT SELECT ON softfk_references TO PUBLIC;

CREATE FUNCTION softfk_purge()
RETURNS TABLE (child regclass, child_column text, parent regclass, on_delete text, rows bigint)
VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'softfk_purge_wrapper';
COMMENT ON FUNCTION softfk_purge() IS
'Run the purge now, in this transaction: apply each reference''s on_delete action to the child rows of deleted parent keys, as the background worker does. One row per reference whose rows it deleted, nulled or archived. Deletions of this same transaction wait for its commit.';
-- A run holds the database's purge lock to its end: a role that could call it could stop the
-- worker by leaving a transaction open. Only the extension's owner, and roles it grants
-- EXECUTE to, may.
REVOKE EXECUTE ON FUNCTION softfk_purge() FROM PUBLIC;

-- The key in any type (an integer from a driver that sends typed parameters, a uuid; a
-- quoted literal is text): archived keys are kept in their text form.
CREATE FUNCTION softfk_restore(parent regclass, key anycompatible)
RETURNS bigint VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'softfk_restore_key';
COMMENT ON FUNCTION softfk_restore(regclass, anycompatible) IS
'Put back the child rows archived (on_delete ''archive'') after parent key "key" of "parent" was deleted; returns how many. Re-create the parent row first.';

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

-- security_barrier: a caller's own function in a WHERE clause cannot see the rows the
-- filter below hides.
CREATE VIEW softfk_status WITH (security_barrier) AS
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
GRANT SELECT ON softfk_status TO PUBLIC;

-- security_barrier: a caller's own function in a WHERE clause cannot see the rows the
-- filter below hides.
CREATE VIEW softfk_purge_runs WITH (security_barrier) AS
SELECT id, started_by, pid, started_at, finished_at, status, batches, keys_purged,
       rows_deleted, rows_nulled, rows_archived,
       -- Errors name keys: each shows only to the owner of its reference's child (and to
       -- the extension's owner).
       coalesce((SELECT pg_catalog.jsonb_agg(x.e ORDER BY x.n)
                   FROM pg_catalog.jsonb_array_elements(run.errors) WITH ORDINALITY AS x (e, n)
                  WHERE v.extension_owner
                     OR EXISTS (SELECT FROM softfk.reference r
                                  JOIN pg_catalog.pg_class c ON c.oid = r.child_table
                                 WHERE r.id::text = x.e OPERATOR(pg_catalog.->>) 'reference'
                                   AND pg_catalog.pg_has_role(c.relowner, 'USAGE'))),
                '[]') AS errors
  FROM softfk.purge_run run
 CROSS JOIN (SELECT pg_catalog.pg_has_role(e.extowner, 'USAGE') AS extension_owner
               FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_softfk') v
 -- Runs show to the extension's owner and to the owners of registered child tables.
 WHERE v.extension_owner
    OR EXISTS (SELECT FROM softfk.reference r JOIN pg_catalog.pg_class c ON c.oid = r.child_table
                WHERE pg_catalog.pg_has_role(c.relowner, 'USAGE'))
 ORDER BY id DESC;
COMMENT ON VIEW softfk_purge_runs IS 'The purge run log, newest first: one row per run of the worker or of softfk_purge(), kept for a week.';
GRANT SELECT ON softfk_purge_runs TO PUBLIC;
