-- pg_softfk 0.4.0 -> 0.5.0.
--
-- Check triggers without a WHEN clause (PostgreSQL parsed it again for every statement; the
-- trigger now decides what the clause did when it fires), the UPDATE trigger limited to
-- UPDATE OF the key column. Every checked reference gets its triggers again, so this takes
-- each checked child table's SHARE ROW EXCLUSIVE lock for a moment, as CREATE TRIGGER does.
-- Everything here is what a fresh install of 0.5.0 has (tests/tap/009_upgrade.pl compares
-- the two).

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
    -- Only an UPDATE that sets the key column queues a check. An UPDATE of another column of
    -- a row inserted earlier in the transaction queues none: that row's own INSERT check
    -- follows the row to its newest version (check_key).
    EXECUTE format(
        'CREATE CONSTRAINT TRIGGER %I AFTER UPDATE OF %I ON %s DEFERRABLE INITIALLY %s FOR EACH ROW '
        'EXECUTE FUNCTION softfk.check_key(%s)',
        softfk.trigger_name(child, child_column, '_softfk_upd'), child_column, child, timing,
        reference);
END $$;

SELECT softfk.install_check(id, child_table, child_column, validate)
  FROM softfk.reference WHERE validate <> 'off';
SELECT softfk.depend_on_extension(t.oid)
  FROM pg_trigger t
 WHERE t.tgfoid = 'softfk.check_key()'::regprocedure AND t.tgparentid = 0;
