-- pg_softfk 0.4.0 -> 0.5.0.
--
-- Check triggers without a WHEN clause (PostgreSQL parsed it again for every statement; the
-- trigger now decides what the clause did when it fires). Every checked reference gets its
-- triggers again, so this takes each checked child table's SHARE ROW EXCLUSIVE lock for a
-- moment, as CREATE TRIGGER does.
-- Everything here is what a fresh install of 0.5.0 has (tests/tap/009_upgrade.pl compares
-- the two).

-- Checks this transaction queued on the old triggers run now: core would silently drop the
-- events of a trigger that is gone, and an orphan written before ALTER EXTENSION in the same
-- transaction would pass. (The new triggers start with their declared timing.)
DO $$
DECLARE
    names text;
BEGIN
    SELECT string_agg(format('%I.%I', n.nspname, t.tgname), ', ')
      INTO names
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE t.tgfoid = 'softfk.check_key()'::regprocedure AND t.tgparentid = 0 AND t.tgdeferrable;
    IF names IS NOT NULL THEN
        EXECUTE 'SET CONSTRAINTS ' || names || ' IMMEDIATE';
    END IF;
END $$;

SELECT softfk.remove_check(id) FROM softfk.reference WHERE validate <> 'off';

DROP FUNCTION softfk.key_needs_check(bigint, anyelement);
DROP FUNCTION softfk.written_by_this_transaction(xid);

CREATE OR REPLACE FUNCTION softfk.install_check(
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

SELECT softfk.install_check(id, child_table, child_column, validate)
  FROM softfk.reference WHERE validate <> 'off';
SELECT softfk.depend_on_extension(t.oid)
  FROM pg_trigger t
 WHERE t.tgfoid = 'softfk.check_key()'::regprocedure AND t.tgparentid = 0;
