-- The capture: triggers on every parent that has soft references record the keys it loses
-- (DELETE, a key UPDATE, TRUNCATE) in the purge's queue softfk.deletion (sql/purge.sql), in
-- the deleting transaction, and wake the purge worker when it commits (src/capture.rs).

-- The capture trigger function, on every parent with soft references. Its arguments are the
-- parent columns that are referenced. For DELETE (statement level, transition table
-- old_rows): one queue row per column with every deleted key; on a partitioned parent, DELETE
-- is captured row by row instead (below); for UPDATE (row level, only when a referenced key
-- changed): the old key; for TRUNCATE: a row meaning "every key".
--
-- A partitioned parent's row triggers are cloned to its partitions, and fire there for a
-- DELETE aimed at one partition, for the DELETE half of an UPDATE that moves a row to another
-- partition, and for a key UPDATE within a partition; a statement trigger on the partitioned
-- table would see none of these. The queue names the registered parent (the table whose
-- trigger was cloned to the partition), not the partition. A registered parent that is
-- itself a partition captures row by row too: deletes through its ancestors reach it only so.
--
-- SECURITY DEFINER: it runs inside whoever deletes users, who may not write the queue (nobody
-- may: a forged queue row would make the worker purge). It only inserts what the statement
-- deleted, and wakes the worker at commit. Keys become text through their type's output
-- function (format('%s')), never a cast: a user-defined cast would run as the definer.
CREATE FUNCTION softfk.capture_deleted_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Keys as text the same way whatever the deleting session's settings (src/purge/ reads them
-- back with these).
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = 1 AS $$
DECLARE
    col  text;
    parent regclass;
    old_key text;
    new_key text;
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        parent := TG_RELID;
        IF TG_LEVEL = 'ROW' AND (SELECT c.relispartition FROM pg_class c WHERE c.oid = TG_RELID) THEN
            -- The table whose trigger this is (a clone on a partition keeps its name).
            parent := (SELECT t.tgrelid FROM pg_partition_ancestors(TG_RELID) a
                         JOIN pg_trigger t ON t.tgrelid = a.relid AND t.tgname = TG_NAME
                        WHERE t.tgparentid = 0
                          AND t.tgfoid = 'softfk.capture_deleted_keys()'::regprocedure);
        END IF;
        IF TG_OP = 'DELETE' AND TG_LEVEL = 'STATEMENT' THEN
            -- Keys in rows of at most 1000, a purge batch's worth: a batch never has to read
            -- (detoast) more of the queue than it purges.
            EXECUTE format(
                'INSERT INTO softfk.deletion (parent_table, parent_column, keys, cause) '
                'SELECT $1, $2, d.k[i : i + 999], ''delete'' '
                  'FROM (SELECT array_agg(format(''%%s'', %1$I)) AS k FROM old_rows WHERE %1$I IS NOT NULL) d, '
                       'generate_series(1, cardinality(d.k), 1000) i', col)
            USING parent, col;
        ELSIF TG_OP IN ('DELETE', 'UPDATE') THEN
            EXECUTE format('SELECT CASE WHEN ($1).%1$I IS NOT NULL THEN format(''%%s'', ($1).%1$I) END, '
                                  'CASE WHEN ($2).%1$I IS NOT NULL THEN format(''%%s'', ($2).%1$I) END', col)
               INTO old_key, new_key USING OLD, NEW;
            IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
                INSERT INTO softfk.deletion (parent_table, parent_column, keys, cause)
                VALUES (parent, col, ARRAY[old_key], lower(TG_OP));
            END IF;
        ELSE
            INSERT INTO softfk.deletion (parent_table, parent_column, keys, cause)
            VALUES (parent, col, NULL, 'truncate');
        END IF;
    END LOOP;
    PERFORM softfk.wake_purge_at_commit();
    RETURN NULL;
END $$;

CREATE FUNCTION softfk.wake_purge_at_commit() RETURNS void
VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'wake_purge_at_commit_wrapper';
COMMENT ON FUNCTION softfk.wake_purge_at_commit() IS
'Wake this database''s purge worker when the current transaction commits (no-op without shared_preload_libraries).';

-- The capture triggers of a parent, found by what they run.
CREATE FUNCTION softfk.capture_triggers(parent regclass)
RETURNS TABLE (trigger_name name)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.tgname FROM pg_trigger t
     WHERE t.tgrelid = parent AND t.tgparentid = 0
       AND t.tgfoid = 'softfk.capture_deleted_keys()'::regprocedure
     ORDER BY t.tgname
$$;

-- Make the capture triggers of a parent match the registry: three triggers naming every
-- referenced column of the parent, or none when nothing references it any more.
--
-- The users table is hot, so this takes as light a lock as it can. Registering another
-- reference to a column already captured changes nothing. A new column replaces the
-- triggers in place (CREATE OR REPLACE TRIGGER: SHARE ROW EXCLUSIVE, which registering holds
-- anyway; reads go on). Only the last reference's removal drops them (DROP TRIGGER takes
-- ACCESS EXCLUSIVE on the parent until commit).
CREATE FUNCTION softfk.sync_capture(parent regclass)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    columns name[] := ARRAY(SELECT DISTINCT r.parent_column FROM softfk.reference r
                             WHERE r.parent_table = parent ORDER BY 1);
    -- The trigger arguments as pg_trigger.tgargs stores them.
    wanted_args bytea := (SELECT string_agg(convert_to(c, getdatabaseencoding()) || decode('00', 'hex'), ''::bytea)
                            FROM unnest(columns) c);
    args text := (SELECT string_agg(quote_literal(c), ', ') FROM unnest(columns) c);
    partitioned boolean := (SELECT c.relkind = 'p' OR c.relispartition FROM pg_class c WHERE c.oid = parent);
    t record;
BEGIN
    IF cardinality(columns) = 0 THEN
        FOR t IN SELECT * FROM softfk.capture_triggers(parent) LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', t.trigger_name, parent);
        END LOOP;
        RETURN;
    END IF;
    -- A partitioned parent's (or a partition's) DELETE trigger is a row trigger
    -- (softfk.capture_deleted_keys).
    IF (SELECT count(*) = 3 AND bool_and(tr.tgargs = wanted_args)
               AND bool_and(tr.tgtype & 8 = 0 OR (tr.tgtype & 1 = 1) = partitioned)
          FROM pg_trigger tr
         WHERE tr.tgrelid = parent AND tr.tgparentid = 0
           AND tr.tgfoid = 'softfk.capture_deleted_keys()'::regprocedure) THEN
        RETURN;
    END IF;
    -- A DELETE trigger of the other level (the parent was attached as a partition, or
    -- detached) goes first: a trigger cannot change level in place.
    FOR t IN SELECT tr.tgname FROM pg_trigger tr
              WHERE tr.tgrelid = parent AND tr.tgparentid = 0 AND tr.tgtype & 8 <> 0
                AND (tr.tgtype & 1 = 1) <> partitioned
                AND tr.tgfoid = 'softfk.capture_deleted_keys()'::regprocedure LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, parent);
    END LOOP;
    IF partitioned THEN
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION softfk.capture_deleted_keys(%s)',
            softfk.capture_trigger_name(parent, 8, 'softfk_capture_delete'), parent, args);
    ELSE
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION softfk.capture_deleted_keys(%s)',
            softfk.capture_trigger_name(parent, 8, 'softfk_capture_delete'), parent, args);
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
        'EXECUTE FUNCTION softfk.capture_deleted_keys(%s)',
        softfk.capture_trigger_name(parent, 16, 'softfk_capture_update'),
        (SELECT string_agg(quote_ident(c), ', ') FROM unnest(columns) c), parent,
        (SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
           FROM unnest(columns) c),
        args);
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION softfk.capture_deleted_keys(%s)',
        softfk.capture_trigger_name(parent, 32, 'softfk_capture_truncate'), parent, args);
END $$;

-- The name of a parent's capture trigger for one event (tgtype bit: 8 DELETE, 16 UPDATE,
-- 32 TRUNCATE): the one it has (it may predate a rename of the table), or a new one.
CREATE FUNCTION softfk.capture_trigger_name(parent regclass, event_bit int, suffix text)
RETURNS name LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT tr.tgname FROM pg_trigger tr
          WHERE tr.tgrelid = parent AND tr.tgparentid = 0 AND tr.tgtype & event_bit <> 0
            AND tr.tgfoid = 'softfk.capture_deleted_keys()'::regprocedure),
        softfk.trigger_name(parent, '', suffix))
$$;

-- CREATE EXTENSION: once this commits, the launcher starts a purge worker for this database.
SELECT softfk.wake_purge_at_commit();
