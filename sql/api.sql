-- The pg_softfk SQL API. Runs last in the extension script. The functions are implemented in
-- Rust (src/); they are declared here so their SQL types, defaults and documentation sit
-- together. None of them is STRICT: a NULL argument is an error (SQLSTATE 22004), not a
-- silent NULL result.

CREATE FUNCTION softfk_add(
    child         regclass,
    child_column  name,
    parent        regclass,
    parent_column name DEFAULT NULL,
    on_delete     text DEFAULT 'cascade',
    validate      text DEFAULT 'deferred')
RETURNS void VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_add_wrapper';
COMMENT ON FUNCTION softfk_add(regclass, name, regclass, name, text, text) IS
'Register child.child_column as a soft reference to parent.parent_column (default: the parent''s single-column primary key). on_delete: cascade | set null | archive | no action; validate: deferred | immediate | off.';

CREATE FUNCTION softfk_alter(
    child         regclass,
    child_column  name,
    on_delete     text DEFAULT NULL,
    validate      text DEFAULT NULL)
RETURNS void VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_alter_wrapper';
COMMENT ON FUNCTION softfk_alter(regclass, name, text, text) IS
'Change the on_delete action or the validate mode of the soft reference on child.child_column; a NULL argument keeps that setting. Changing validate replaces the check triggers; existing rows are not re-checked (orphan_report() finds them).';

CREATE FUNCTION softfk_drop(child regclass, child_column name)
RETURNS void VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_drop_wrapper';
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
VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'orphan_report_wrapper';
COMMENT ON FUNCTION orphan_report() IS
'One row per soft reference: child rows whose non-NULL key has no parent row (orphan_rows), how many distinct such keys (orphan_keys), the ten smallest of them, how many child rows were examined, and how long it took.';

CREATE FUNCTION softfk.orphan_rows_query(child regclass, child_column name)
RETURNS text STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'orphan_rows_query_wrapper';
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
