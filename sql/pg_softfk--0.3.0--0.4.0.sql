-- pg_softfk 0.3.0 -> 0.4.0.
--
-- Purge workers that hold a database only while it has work (a pool, src/worker/), shown
-- in softfk_status; DROP EXTENSION refused while the archive holds rows; softfk_restore for
-- a key of any type; softfk_revert(..., on_delete => ...); softfk_status's pace, estimated
-- time to drain and why keys wait (softfk.horizon_holder, purge_run.rows_by_reference); two
-- partial indexes for the search for a ready queue row.
-- Everything here is what a fresh install of 0.4.0 has (tests/tap/009_upgrade.pl compares
-- the two).

DROP FUNCTION softfk.foreign_key_clause(regclass, name);
CREATE FUNCTION softfk.foreign_key_clause(child regclass, child_column name, on_delete text) RETURNS text
STABLE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'foreign_key_clause_wrapper';
COMMENT ON FUNCTION softfk.foreign_key_clause(regclass, name, text) IS
'softfk_revert: the [CONSTRAINT name] FOREIGN KEY ... clause equivalent to the soft reference on child.child_column (as adopted, if it was), with ON DELETE on_delete unless it is NULL.';

DROP PROCEDURE softfk_revert(regclass, name);
DROP FUNCTION softfk.revert_prepare(regclass, name);
DROP FUNCTION softfk.revert_finish(regclass, name);

-- softfk_revert, first transaction: the foreign key, NOT VALID. It checks every write from
-- its commit on (so the second step can scan without missing any). The orphan count before it
-- scans the child under no lock but ACCESS SHARE; adding the key takes SHARE ROW EXCLUSIVE on
-- child and parent for a moment and scans nothing. PostgreSQL 15 refuses NOT VALID on a
-- partitioned table: its leaf partitions get the key instead, under the same name.
CREATE FUNCTION softfk.revert_prepare(child regclass, child_column name, on_delete text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    leaf regclass;
    clause text;
BEGIN
    IF child IS NULL OR child_column IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN child IS NULL THEN 'child' ELSE 'child_column' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM softfk.foreign_key_clause(child, child_column, on_delete);  -- refuses what has no native key
    IF NOT EXISTS (SELECT FROM softfk.foreign_keys_on(child, child_column)) THEN
        -- Before any lock: the count scans the child. (Orphans written after it fail the
        -- validation in the second step.)
        PERFORM softfk.refuse_orphans(child, child_column);
    END IF;
    -- The lock ADD FOREIGN KEY takes anyway, before looking again: two calls at once do not
    -- both add a key.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', child);
    IF EXISTS (SELECT FROM softfk.foreign_keys_on(child, child_column) k WHERE k.validated) THEN
        RETURN;  -- validated by a softfk_revert that stopped before its last step
    END IF;
    -- Unvalidated keys left by a softfk_revert that stopped after this step: on_delete may
    -- have changed since, or partitions been added. Take them off and add them afresh.
    PERFORM softfk.drop_unvalidated_keys(child, child_column);
    PERFORM softfk.drop_not_enforced_keys(child, child_column);
    clause := softfk.foreign_key_clause(child, child_column, on_delete);  -- (after the drops: the name is free)
    FOR leaf IN SELECT t.relid FROM softfk.table_and_partitions(child) t WHERE t.isleaf LOOP
        EXECUTE format('ALTER TABLE %s ADD %s NOT VALID', leaf, clause);
    END LOOP;
END $$;

-- softfk_revert, third transaction: a partitioned table gets its key (core attaches the
-- validated ones of its partitions instead of scanning again), and the soft reference goes.
-- Both take strong locks, for a moment.
CREATE FUNCTION softfk.revert_finish(child regclass, child_column name, on_delete text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM softfk.foreign_keys_on(child, child_column) k WHERE k.relation = child) THEN
        EXECUTE format('ALTER TABLE %s ADD %s', child, softfk.foreign_key_clause(child, child_column, on_delete));
    END IF;
    EXECUTE format('SELECT %I.softfk_drop($1, $2)', softfk.api_schema())
       USING child, child_column;
END $$;

-- Put back a native foreign key in place of the soft reference on child.child_column: the
-- one softfk_adopt dropped (same name, ON DELETE, ON UPDATE, DEFERRABLE), or the equivalent
-- of the registration. In three transactions, so that the validating scan does not block
-- writes; hence a procedure (CALL), refused inside a transaction block. Run it again after
-- an interruption: it carries on from the foreign key the first transaction added.
-- (No SET clause: a procedure that commits cannot have one. Everything it names is
-- schema-qualified, and the steps run with a fixed search_path.)
CREATE PROCEDURE softfk_revert(child regclass, child_column name, on_delete text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    validated boolean;
    message text;
    code text;
    detail text;
    again text := format('CALL softfk_revert(%L, %L%s)', child::text, child_column,
                         CASE WHEN on_delete IS NOT NULL THEN format(', on_delete => %L', on_delete) ELSE '' END);
BEGIN
    PERFORM softfk.revert_outside_transaction_block();
    PERFORM softfk.revert_prepare(child, child_column, on_delete);
    COMMIT;
    -- From here on a NOT VALID key is committed: an error (a lock timeout, a cancel) leaves
    -- it, and says so.
    BEGIN
        validated := softfk.revert_validate(child, child_column);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION USING MESSAGE = message, ERRCODE = code,
            DETAIL = concat_ws(' ', nullif(detail, ''), 'The foreign key added NOT VALID by the first step stays, with the soft reference.'),
            HINT = again || ' again to finish, or drop the NOT VALID key.';
    END;
    IF NOT validated THEN
        COMMIT;
        PERFORM softfk.refuse_orphans(child, child_column);
        RAISE EXCEPTION 'cannot put back a foreign key on column "%" of table "%": rows written meanwhile reference no parent row',
                        child_column, child
            USING ERRCODE = 'foreign_key_violation', DETAIL = 'The soft reference is left as it was.';
    END IF;
    COMMIT;
    BEGIN
        PERFORM softfk.revert_finish(child, child_column, on_delete);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION USING MESSAGE = message, ERRCODE = code,
            DETAIL = concat_ws(' ', nullif(detail, ''), 'The keys validated by the second step stay; the soft reference is still registered.'),
            HINT = again || ' again to finish.';
    END;
END $$;
COMMENT ON PROCEDURE softfk_revert(regclass, name, text) IS
'Replace the soft reference on child.child_column by a native foreign key (the one softfk_adopt dropped, or the equivalent): added NOT VALID and committed, validated without blocking writes and committed, then the soft reference is dropped. on_delete (cascade | set null | no action | restrict) gives the key''s ON DELETE; NULL keeps the reference''s own (''archive'' has no native equivalent: 0A000). Refuses (23503) while the column has orphans, leaving the soft reference as it was. CALL it outside a transaction block.';

-- The archive is never lost silently: DROP EXTENSION pg_softfk (and DROP SCHEMA softfk) is
-- refused while it holds rows (src/purge/archive.rs).
CREATE FUNCTION softfk.keep_archive() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_keep_archive';
CREATE EVENT TRIGGER softfk_keep_archive ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
    EXECUTE FUNCTION softfk.keep_archive();

ALTER TABLE softfk.purge_run ADD COLUMN rows_by_reference jsonb NOT NULL DEFAULT '{}';

-- The search for a ready row (src/purge/queue.rs): rows before their first pass, oldest
-- first; rows through it whose horizon has passed. Rows waiting for their final pass (a long
-- transaction holds the horizon) are in neither scan's way.
CREATE INDEX deletion_first_pass ON softfk.deletion (id) WHERE NOT final_pass;
CREATE INDEX deletion_final_pass ON softfk.deletion (final_after, id) WHERE final_pass;

-- Who holds the final passes back: the oldest transaction still running in the cluster, if it
-- began before `final_after` (the next transaction id at a key's first pass). Named as
-- softfk_status shows it: a session by its pid, database, state and age; a prepared
-- transaction by its gid. NULL when nothing holds the horizon below final_after.
CREATE FUNCTION softfk.horizon_holder(final_after xid8) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH oldest AS (
        SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
    ), oldest_xid AS (
        -- (xid8 to xid: the low 32 bits, as pg_stat_activity and pg_prepared_xacts show it)
        SELECT (xmin::text::numeric % 4294967296)::text::xid AS xid FROM oldest
         WHERE xmin < final_after
    )
    SELECT coalesce(
        (SELECT format('transaction of pid %s (database %s, %s since %s)', a.pid,
                       coalesce(a.datname, '-'), coalesce(a.state, a.backend_type),
                       to_char(a.xact_start, 'YYYY-MM-DD HH24:MI:SS TZ'))
           FROM pg_stat_activity a, oldest_xid o WHERE a.backend_xid = o.xid LIMIT 1),
        (SELECT format('prepared transaction %L (database %s, prepared at %s)', p.gid,
                       p.database, to_char(p.prepared, 'YYYY-MM-DD HH24:MI:SS TZ'))
           FROM pg_prepared_xacts p, oldest_xid o WHERE p.transaction = o.xid LIMIT 1),
        (SELECT format('transaction %s', o.xid) FROM oldest_xid o))
$$;

-- Who purges this database now (src/worker/): a connected worker, one waiting for a place in
-- the pool (pg_softfk.max_purge_workers) or for a background worker slot, or none needed.
CREATE FUNCTION softfk.purge_worker(OUT state text, OUT since timestamptz)
RETURNS SETOF record STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'purge_worker_wrapper';

DROP FUNCTION softfk_restore(regclass, text);
-- The key in any type (an integer from a driver that sends typed parameters, a uuid; a
-- quoted literal is text): archived keys are kept in their text form.
CREATE FUNCTION softfk_restore(parent regclass, key anycompatible)
RETURNS bigint VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'softfk_restore_key';
COMMENT ON FUNCTION softfk_restore(regclass, anycompatible) IS
'Put back the child rows archived (on_delete ''archive'') after parent key "key" of "parent" was deleted; returns how many. Re-create the parent row first.';

-- security_barrier: a caller's own function in a WHERE clause cannot see the rows the
-- filter below hides.
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
           WHEN o.holder IS NOT NULL
               THEN 'its final pass, for the ' || o.holder || ', which began before the deletion'
           WHEN t.last_error_at >= q.oldest THEN 'a retry after the error in last_error'
           ELSE 'its turn'
       END AS waiting_for
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
 -- Everyone sees the references of the child tables they own (a superuser: all).
 WHERE pg_catalog.pg_has_role(c.relowner, 'USAGE')
 ORDER BY r.child_table::text, ca.attname;
COMMENT ON VIEW softfk_status IS 'Per soft reference: the purge''s backlog (keys not final yet, oldest age), what it has done (rows deleted, nulled, archived; last run; last error), who purges this database now (purge_worker: connected, starting, waiting for a purge worker or a background worker slot, not connected), the recent pace (keys and rows per second) with the estimated time to drain, and why the oldest pending key waits (waiting_for).';
