-- Check: the constraint triggers that validate child keys on write, without locking the
-- parent row. softfk_add / softfk_alter install them, softfk_drop and dropping the parent
-- remove them; src/check/ is what they run.
--
-- Each validated reference has two triggers on the child table (two, because an INSERT
-- trigger's WHEN clause cannot mention OLD):
--   <table>_<column>_softfk_ins  AFTER INSERT
--   <table>_<column>_softfk_upd  AFTER UPDATE, only when the key changed (or see below)
-- Both are DEFERRABLE, INITIALLY DEFERRED for validate 'deferred' and INITIALLY IMMEDIATE
-- for 'immediate', so SET CONSTRAINTS works on them by these names (or ALL).

CREATE FUNCTION softfk.check_key() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_check_key';
COMMENT ON FUNCTION softfk.check_key() IS
'Trigger: the child key of the new row version must exist in the parent (probed without a row lock).';

-- Called from the triggers' WHEN clause: false when a check of the same key is already queued
-- in this transaction, so that a million rows over a hundred thousand users queue about a
-- hundred thousand checks, not a million (see src/check/pending.rs).
CREATE FUNCTION softfk.key_needs_check(reference bigint, key anyelement) RETURNS boolean
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_key_needs_check';
COMMENT ON FUNCTION softfk.key_needs_check(bigint, anyelement) IS
'Trigger condition: does this key need a check event of its own (none is queued yet in this transaction)?';

CREATE FUNCTION softfk.written_by_this_transaction(row_xmin xid) RETURNS boolean
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'written_by_this_transaction_wrapper';
COMMENT ON FUNCTION softfk.written_by_this_transaction(xid) IS
'Was a row version with this xmin written by the current transaction or one of its subtransactions?';

-- The name of a trigger pg_softfk puts on a table: "<table>_<column><suffix>" for a check
-- trigger, "<table>_<suffix>" for a capture trigger (column ''). When that exceeds
-- NAMEDATALEN - 1 bytes it is cut, without splitting a character, and ends with 8 hex
-- digits of the full name's md5: two long columns whose names differ only past the cut still
-- get distinct triggers.
CREATE FUNCTION softfk.trigger_name(tab regclass, column_name name, suffix text)
RETURNS name LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    base text := (SELECT relname FROM pg_class WHERE oid = tab) || '_' || column_name;
    tag text;
BEGIN
    IF octet_length(base) + octet_length(suffix) <= 63 THEN
        RETURN base || suffix;
    END IF;
    tag := '_' || left(md5(base), 8) || CASE WHEN suffix LIKE '\_%' THEN '' ELSE '_' END;
    WHILE octet_length(base) > 63 - octet_length(suffix) - octet_length(tag) LOOP
        base := left(base, -1);
    END LOOP;
    RETURN base || tag || suffix;
END $$;

CREATE FUNCTION softfk.install_check(
    reference bigint, child regclass, child_column name, validate text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    timing text := CASE validate WHEN 'deferred' THEN 'DEFERRED' ELSE 'IMMEDIATE' END;
    -- The reference id is written as a quoted literal so that it is folded to a bigint
    -- constant once, when the WHEN clause is parsed, not cast on every row.
    id text := quote_literal(reference);
BEGIN
    IF validate = 'off' THEN
        RETURN;
    END IF;
    -- NULL keys pass (MATCH SIMPLE) and queue nothing: key_needs_check() is STRICT, so a NULL
    -- key makes the WHEN clause NULL. (The clause is parsed once per statement, so it is kept
    -- to the fewest nodes: single-row inserts pay for each one.)
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER %I AFTER INSERT ON %s DEFERRABLE INITIALLY %s FOR EACH ROW '
        'WHEN (softfk.key_needs_check(%s, NEW.%I)) '
        'EXECUTE FUNCTION softfk.check_key(%s)',
        softfk.trigger_name(child, child_column, '_softfk_ins'), child, timing,
        id, child_column, id);
    -- An UPDATE that keeps the key queues nothing, unless the row was written earlier in this
    -- transaction: that row's own INSERT check will find it updated and skip it (as core's
    -- RI_FKey_fk_upd_check_required reasons), so its key must be checked again here. For that
    -- reason the trigger is not limited to UPDATE OF the column: an UPDATE of another column
    -- of a row inserted in this transaction must still reach the WHEN clause.
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER %I AFTER UPDATE ON %s DEFERRABLE INITIALLY %s FOR EACH ROW '
        'WHEN ((OLD.%I IS DISTINCT FROM NEW.%I OR softfk.written_by_this_transaction(OLD.xmin)) '
        'AND softfk.key_needs_check(%s, NEW.%I)) '
        'EXECUTE FUNCTION softfk.check_key(%s)',
        softfk.trigger_name(child, child_column, '_softfk_upd'), child, timing,
        child_column, child_column, id, child_column, id);
END $$;

-- The check triggers of a reference, found by what they run rather than by name (names go
-- stale when the table or column is renamed). Partitions' clones go with their parent trigger.
CREATE FUNCTION softfk.check_triggers(reference bigint)
RETURNS TABLE (child regclass, trigger_name name)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.tgrelid::regclass, t.tgname
      FROM pg_trigger t
     WHERE t.tgfoid = 'softfk.check_key()'::regprocedure
       AND t.tgparentid = 0
       AND t.tgnargs = 1
       AND t.tgargs = convert_to(reference::text, 'SQL_ASCII') || '\x00'::bytea
     ORDER BY t.tgname
$$;

CREATE FUNCTION softfk.remove_check(reference bigint)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM softfk.check_triggers(reference) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.trigger_name, t.child);
    END LOOP;
END $$;

-- DROP EXTENSION pg_softfk takes the check triggers with it, as dropping a foreign key takes
-- its internal triggers: every check trigger, however it was created (softfk_add, or
-- pg_restore replaying a dump), gets an automatic dependency on the extension.
CREATE FUNCTION softfk.depend_on_extension(trigger oid) RETURNS void
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'depend_on_extension_wrapper';
COMMENT ON FUNCTION softfk.depend_on_extension(oid) IS
'Make a trigger pg_softfk put on a user table (check or capture) go away with DROP EXTENSION pg_softfk (other triggers are ignored).';

CREATE FUNCTION softfk.tie_check_triggers() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM softfk.depend_on_extension(c.objid)
       FROM pg_event_trigger_ddl_commands() c
      WHERE c.classid = 'pg_trigger'::regclass;
END $$;

CREATE EVENT TRIGGER softfk_tie_check_triggers ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION softfk.tie_check_triggers();
