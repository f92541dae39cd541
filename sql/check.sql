-- Check: the constraint triggers that validate child keys on write, without locking the
-- parent row. softfk_add / softfk_alter install them, softfk_drop and dropping the parent
-- remove them; src/check/ is what they run.
--
-- Each validated reference has two triggers on the child table:
--   <table>_<column>_softfk_ins  AFTER INSERT
--   <table>_<column>_softfk_upd  AFTER UPDATE
-- Both are DEFERRABLE, INITIALLY DEFERRED for validate 'deferred' and INITIALLY IMMEDIATE
-- for 'immediate', so SET CONSTRAINTS works on them by these names (or ALL).
--
-- Neither has a WHEN clause: PostgreSQL parses a trigger's WHEN clause again for every
-- statement, a cost each single-row write paid (BENCHMARKS.md, issue 16). What a WHEN
-- clause would decide (a NULL key, a key the UPDATE kept, a key already found by this batch of
-- events) the trigger decides when it fires (src/check/).

CREATE FUNCTION softfk.check_key() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_check_key';
COMMENT ON FUNCTION softfk.check_key() IS
'Trigger: the child key of the new row version must exist in the parent (probed without a row lock).';

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
BEGIN
    IF validate = 'off' THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER %I AFTER INSERT ON %s DEFERRABLE INITIALLY %s FOR EACH ROW '
        'EXECUTE FUNCTION softfk.check_key(%s)',
        softfk.trigger_name(child, child_column, '_softfk_ins'), child, timing, reference);
    -- Every UPDATE, not UPDATE OF the key column: that would miss a key a BEFORE trigger
    -- changes (core looks only at the SET list). check_key returns at once when the key is
    -- unchanged.
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER %I AFTER UPDATE ON %s DEFERRABLE INITIALLY %s FOR EACH ROW '
        'EXECUTE FUNCTION softfk.check_key(%s)',
        softfk.trigger_name(child, child_column, '_softfk_upd'), child, timing, reference);
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
