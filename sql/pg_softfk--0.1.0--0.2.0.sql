-- pg_softfk 0.1.0 -> 0.2.0. cargo pgrx install copies it next to the install script.
-- tests/tap/009_upgrade.pl checks that an updated database has exactly the objects of a
-- fresh 0.2.0 install: a change to sql/ that this script does not carry fails it. Its later
-- part is sql/adopt.sql as of 0.2.0, whose objects are all new or re-created; the capture
-- functions, re-created, come last.

-- adopt.sql, appended below, creates these again (softfk_discover gained a column, and the
-- name patterns of softfk.looks_like_reference moved into it).
DROP FUNCTION softfk_discover(regclass);
DROP FUNCTION softfk.looks_like_reference(name, regclass);
DROP FUNCTION softfk_adopt(regclass, name);

-- The API's C functions pin search_path (sql/api.sql); the list of references is readable by all.
ALTER FUNCTION softfk_add(regclass, name, regclass, name, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_alter(regclass, name, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_drop(regclass, name) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION orphan_report() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk.orphan_rows_query(regclass, name) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_purge() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_restore(regclass, text) SET search_path = pg_catalog, pg_temp;
GRANT SELECT ON softfk_references TO PUBLIC;
-- Only the extension's owner (and whom it grants) may run the purge (sql/api.sql).
REVOKE EXECUTE ON FUNCTION softfk_purge() FROM PUBLIC;

-- A reference that fails in a batch with others gets its keys in a queue row of its own
-- (sql/purge.sql).
ALTER TABLE softfk.deletion
    ADD COLUMN reference_id bigint REFERENCES softfk.reference (id) ON DELETE CASCADE;
-- The cluster whose transaction ids final_after counts in (sql/purge.sql).
CREATE FUNCTION softfk.system_identifier() RETURNS bigint
STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'system_identifier_wrapper';
ALTER TABLE softfk.deletion
    ADD COLUMN xid_cluster bigint NOT NULL DEFAULT softfk.system_identifier();
CREATE INDEX deletion_reference_id ON softfk.deletion (reference_id) WHERE reference_id IS NOT NULL;

-- The purge's views show each child's owner its own references and errors (sql/api.sql).
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
       t.last_error_at
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
 -- Everyone sees the references of the child tables they own (a superuser: all).
 WHERE pg_catalog.pg_has_role(c.relowner, 'USAGE')
 ORDER BY r.child_table::text, ca.attname;
COMMENT ON VIEW softfk_status IS 'Per soft reference: the purge''s backlog (keys not final yet, oldest age) and what it has done (rows deleted, nulled, archived; last run; last error).';
GRANT SELECT ON softfk_status TO PUBLIC;

CREATE OR REPLACE VIEW softfk_purge_runs WITH (security_barrier) AS
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

-- ALTER COLUMN ... TYPE of a key column (src/key_type.rs): PostgreSQL refuses to change a
-- column that a trigger's definition names, so as the ALTER TABLE starts, the triggers
-- naming the column come off (the parent's capture triggers, the child's check triggers);
-- softfk.follow_column_renames puts them back when it ends. Called as the extension's owner,
-- for the table's owner only; not for anyone else.
CREATE FUNCTION softfk.release_key_column(tab regclass, column_name name)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    IF EXISTS (SELECT FROM softfk.reference r
                WHERE r.parent_table = tab AND r.parent_column = column_name) THEN
        FOR t IN SELECT * FROM softfk.capture_triggers(tab) LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', t.trigger_name, tab);
        END LOOP;
    END IF;
    FOR t IN SELECT r.id FROM softfk.reference r
              WHERE r.child_table = tab AND r.child_column = column_name LOOP
        PERFORM softfk.remove_check(t.id);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION softfk.release_key_column(regclass, name) FROM PUBLIC;

CREATE FUNCTION softfk.before_alter_table() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'softfk_before_alter_table';

CREATE EVENT TRIGGER softfk_before_alter_table ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION softfk.before_alter_table();

-- Long trigger names end with an md5 tag (sql/check.sql). Existing triggers keep their names:
-- pg_softfk finds its triggers by function and arguments.
CREATE OR REPLACE FUNCTION softfk.trigger_name(tab regclass, column_name name, suffix text)
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

-- ALTER TABLE refuses to make a permanent child reference an unlogged parent
-- (sql/bootstrap.sql).
CREATE OR REPLACE FUNCTION softfk.follow_column_renames() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    renamed_parent regclass;
    unlogged record;
    unchecked record;
    -- Tables whose key-column triggers came off for this command (src/key_type.rs).
    released oid[] := string_to_array(nullif(current_setting('pg_softfk.released_tables', true), ''), ',')::oid[];
BEGIN
    SELECT r.child_table, r.parent_table INTO unlogged
      FROM softfk.reference r
      JOIN pg_class c ON c.oid = r.child_table
      JOIN pg_class p ON p.oid = r.parent_table
     WHERE p.relpersistence = 'u' AND c.relpersistence = 'p'
       AND EXISTS (SELECT FROM pg_event_trigger_ddl_commands() d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid IN (r.child_table, r.parent_table))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'soft references on permanent tables may reference only permanent tables'
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = format('After this ALTER TABLE, permanent %s would reference unlogged %s.',
                                  unlogged.child_table, unlogged.parent_table);
    END IF;
    -- The purge nulls a 'set null' column: it must stay nullable (softfk_add refuses a NOT
    -- NULL one for the same reason).
    SELECT r.child_table, a.attname INTO unlogged
      FROM softfk.reference r
      JOIN pg_attribute a ON a.attrelid = r.child_table AND a.attnum = r.child_attnum
     WHERE r.on_delete = 'set null' AND a.attnotnull
       AND EXISTS (SELECT FROM pg_event_trigger_ddl_commands() d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = r.child_table)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'column "%" of table % has a soft reference with on_delete ''set null''',
                unlogged.attname, unlogged.child_table
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = 'The purge sets it to NULL when the parent row is deleted; it cannot be NOT NULL.',
                  HINT = 'Change the soft reference first: softfk_alter(child, column, on_delete => ''cascade'').';
    END IF;
    UPDATE softfk.reference r SET child_column = a.attname
      FROM pg_attribute a
     WHERE a.attrelid = r.child_table AND a.attnum = r.child_attnum AND a.attname <> r.child_column;
    PERFORM softfk.follow_queued_column_renames();
    FOR renamed_parent IN
        WITH renamed AS (
            UPDATE softfk.reference r SET parent_column = a.attname
              FROM pg_attribute a
             WHERE a.attrelid = r.parent_table AND a.attnum = r.parent_attnum
               AND a.attname <> r.parent_column
            RETURNING r.parent_table)
        SELECT DISTINCT parent_table FROM renamed
        -- Parents whose capture triggers softfk.release_key_column took off for this
        -- ALTER COLUMN ... TYPE: sync_capture puts them back.
        UNION
        SELECT DISTINCT r.parent_table FROM softfk.reference r
         WHERE r.parent_table::oid = ANY (released)
        -- Parents attached as a partition (or detached) since their DELETE trigger was made:
        -- a partition captures row by row, a plain table per statement.
        UNION
        SELECT DISTINCT r.parent_table FROM softfk.reference r
          JOIN pg_class c ON c.oid = r.parent_table
          JOIN pg_trigger t ON t.tgrelid = r.parent_table AND t.tgparentid = 0
                           AND t.tgfoid = 'softfk.capture_deleted_keys()'::regprocedure
         WHERE t.tgtype & 8 <> 0 AND (t.tgtype & 1 = 1) <> (c.relkind = 'p' OR c.relispartition)
    LOOP
        PERFORM softfk.sync_capture(renamed_parent);
    END LOOP;
    -- Checked references of the tables whose key column this ALTER COLUMN ... TYPE changed:
    -- their keys must still compare (otherwise the ALTER is refused, and undone), and check
    -- triggers that came off go back on.
    FOR unchecked IN
        SELECT r.id, r.child_table, r.child_column, r.parent_table, r.validate,
               k.operator IS NOT NULL AS comparable,
               NOT EXISTS (SELECT FROM softfk.check_triggers(r.id)) AS triggers_off
          FROM softfk.reference r
          LEFT JOIN LATERAL softfk.key_comparison(r.parent_table, r.parent_attnum,
                                                  r.child_table, r.child_attnum) k ON true
         WHERE r.validate <> 'off'
           AND (r.child_table::oid = ANY (released) OR r.parent_table::oid = ANY (released))
    LOOP
        IF NOT unchecked.comparable THEN
            RAISE EXCEPTION 'soft reference %(%) -> % could no longer be checked after this ALTER TABLE',
                    unchecked.child_table, unchecked.child_column, unchecked.parent_table
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = 'The parent column needs a unique index comparable with the child column.',
                      HINT = 'Change both key columns to comparable types, or turn the check off first: softfk_alter(child, column, validate => ''off'').';
        END IF;
        IF unchecked.triggers_off THEN
            PERFORM softfk.install_check(unchecked.id, unchecked.child_table, unchecked.child_column, unchecked.validate);
            PERFORM softfk.depend_on_extension(t.oid) FROM pg_trigger t
              WHERE t.tgrelid = unchecked.child_table AND t.tgparentid = 0
                AND t.tgfoid = 'softfk.check_key()'::regprocedure;
        END IF;
    END LOOP;
    PERFORM set_config('pg_softfk.released_tables', '', true);
END $$;

-- Implicit casts through user-written functions are no longer comparable (sql/bootstrap.sql).
CREATE OR REPLACE FUNCTION softfk.key_comparison(
    parent regclass, parent_attnum int2, child regclass, child_attnum int2,
    OUT unique_index regclass, OUT operator text, OUT child_cast text,
    -- The same, as the check trigger's index probe needs it (see src/check.rs): the
    -- operator's function, its right-hand type, the index's collation, and the function
    -- applying the implicit cast (0 when there is none or it is binary-coercible).
    OUT comparison_function regproc, OUT right_type oid, OUT collation oid,
    OUT cast_function oid)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH idx AS (
        SELECT i.indexrelid, oc.opcfamily, oc.opcintype, i.indcollation[0] AS collation
          FROM pg_index i
          JOIN pg_opclass oc ON oc.oid = i.indclass[0]
         WHERE i.indrelid = parent AND i.indisunique AND i.indimmediate AND i.indisvalid
           AND i.indnkeyatts = 1 AND i.indkey[0] = parent_attnum
           AND i.indpred IS NULL AND i.indexprs IS NULL
           -- Keys equal under a nondeterministic collation ('Alice', 'alice') are different
           -- strings: the check and the purge could disagree about which rows a key has.
           AND NOT EXISTS (SELECT FROM pg_collation co
                            WHERE co.oid IN (i.indcollation[0],
                                             (SELECT a.attcollation FROM pg_attribute a
                                               WHERE a.attrelid = child AND a.attnum = child_attnum))
                              AND NOT co.collisdeterministic)
         ORDER BY i.indisprimary DESC, i.indexrelid
         LIMIT 1
    ), child_type AS (
        SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS oid
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = child AND a.attnum = child_attnum
    )
    SELECT idx.indexrelid::regclass,
           quote_ident(n.nspname) || '.' || o.oprname,
           -- (-1, not NULL: with NULL, bpchar prints as character, which reads as char(1).)
           CASE WHEN op.amoprighttype <> ct.oid THEN format_type(op.amoprighttype, -1) END,
           o.oprcode,
           op.amoprighttype,
           idx.collation,
           coalesce((SELECT c.castfunc FROM pg_cast c
                      WHERE c.castsource = ct.oid AND c.casttarget = op.amoprighttype), 0)
      FROM idx CROSS JOIN child_type ct
      LEFT JOIN LATERAL (
            SELECT ao.amopopr, ao.amoprighttype
              FROM pg_amop ao
             WHERE ao.amopfamily = idx.opcfamily AND ao.amopstrategy = 3
               AND ao.amoplefttype = idx.opcintype
               AND (ao.amoprighttype = ct.oid
                    OR (ao.amoprighttype = idx.opcintype
                        AND EXISTS (SELECT FROM pg_cast c
                                     WHERE c.castsource = ct.oid AND c.casttarget = idx.opcintype
                                       AND c.castcontext = 'i'
                                       -- Binary-coercible, or a built-in function: the purge and
                                       -- the report apply it as other roles (the extension's
                                       -- owner, the child's owner), who must not run a
                                       -- function some user wrote.
                                       AND (c.castmethod = 'b'
                                            OR c.castmethod = 'f' AND EXISTS (
                                                SELECT FROM pg_proc p
                                                 WHERE p.oid = c.castfunc
                                                   AND p.pronamespace = 'pg_catalog'::regnamespace)))))
             ORDER BY ao.amoprighttype = ct.oid DESC
             LIMIT 1) op ON true
      LEFT JOIN pg_operator o ON o.oid = op.amopopr
      LEFT JOIN pg_namespace n ON n.oid = o.oprnamespace
$$;

-- Registrations that 0.1.0 accepted and 0.2.0 can no longer check: say which.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT ref.child_table, ref.child_column, ref.parent_table
               FROM softfk.reference ref
               LEFT JOIN LATERAL softfk.key_comparison(ref.parent_table, ref.parent_attnum,
                                                       ref.child_table, ref.child_attnum) k ON true
              WHERE k.operator IS NULL
    LOOP
        RAISE WARNING 'soft reference %(%) -> % can no longer be checked: its keys compare through a user-written cast or a nondeterministic collation', r.child_table, r.child_column, r.parent_table
            USING HINT = 'Remove it with softfk_drop(), or change the column so that the keys compare directly, with a deterministic collation.';
    END LOOP;
END $$;

-- sql/adopt.sql as of 0.2.0.
-- Adopting an existing schema: finding the columns that reference a parent (native foreign
-- keys, registered soft references, and unconstrained columns that look like references).
-- Catalog-only: no table is scanned, so a database with hundreds of references answers at
-- once.

-- A foreign key's ON DELETE / ON UPDATE action (pg_constraint.confdeltype, confupdtype) in
-- words, as written in SQL (lower case).
CREATE FUNCTION softfk.referential_action(code "char")
RETURNS text LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE code WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default'
                     WHEN 'r' THEN 'restrict' WHEN 'a' THEN 'no action' END
$$;

CREATE FUNCTION softfk_discover(referenced regclass DEFAULT NULL)
RETURNS TABLE (
    kind            text,
    child           regclass,
    child_column    name,
    parent          regclass,
    parent_column   name,
    on_delete       text,
    adoptable       boolean,
    estimated_rows  bigint,
    indexed         boolean,
    constraint_name name,
    note            text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH
    -- Native foreign keys pointing at the parent (one row per constraint; a multi-column
    -- one is listed by its first column, with a note).
    fk AS (
        SELECT 'foreign key'::text AS kind, con.conrelid AS child, con.conkey[1] AS child_attnum,
               con.confrelid AS parent, con.confkey[1] AS parent_attnum,
               softfk.referential_action(con.confdeltype) AS on_delete,
               -- What softfk_adopt takes: one column, an ON DELETE it has an action for.
               cardinality(con.conkey) = 1 AND con.confdeltype <> 'd' AS adoptable,
               con.conname AS constraint_name,
               CASE WHEN cardinality(con.conkey) > 1
                    THEN format('multi-column foreign key (%s columns): cannot be adopted', cardinality(con.conkey))
                    WHEN con.confdeltype = 'd'
                    THEN 'ON DELETE SET DEFAULT: cannot be adopted'
               END AS note
          FROM pg_constraint con
         WHERE con.contype = 'f' AND con.conparentid = 0
           AND con.connamespace <> 'softfk'::regnamespace  -- (pg_softfk's own tables)
           AND (referenced IS NULL OR con.confrelid = referenced)
    ),
    registered AS (
        SELECT 'registered'::text, r.child_table::oid, r.child_attnum, r.parent_table::oid,
               r.parent_attnum, r.on_delete, false, NULL::name, NULL::text
          FROM softfk.reference r
         WHERE referenced IS NULL OR r.parent_table = referenced
    ),
    -- Parents to look for candidates of: the one asked about, or every table some foreign
    -- key or soft reference already points at; with the name their references go by.
    parents AS (
        SELECT p.parent, lower(c.relname) AS relname, lower(c.relname) LIKE '%user%' AS users_table
          FROM (SELECT referenced::oid AS parent WHERE referenced IS NOT NULL
                UNION
                SELECT parent FROM fk WHERE referenced IS NULL
                UNION
                SELECT r.parent_table FROM softfk.reference r WHERE referenced IS NULL) p
          JOIN pg_class c ON c.oid = p.parent
    ),
    -- Unconstrained, unregistered columns of user tables whose name says they hold a key of
    -- the parent: <parent>_id and *_<parent>_id for any parent; for a users table (a name
    -- containing "user") also user_id, *_user_id, *_by_id (created_by_id, history_user_id...)
    -- and student_id, as Django and Open edX name them. (Materialized, so that the costly
    -- type comparison below runs only on these few.)
    named AS MATERIALIZED (
        SELECT a.attrelid, a.attnum, p.parent, pk.attnum AS parent_attnum
          FROM parents p
          -- The parent's key: its single-column primary key.
          JOIN pg_index i ON i.indrelid = p.parent AND i.indisprimary AND i.indnkeyatts = 1
          JOIN pg_attribute pk ON pk.attrelid = p.parent AND pk.attnum = i.indkey[0]
          JOIN pg_attribute a ON a.attnum > 0 AND NOT a.attisdropped
                             AND (lower(a.attname) = p.relname || '_id'
                                  OR lower(a.attname) LIKE '%\_' || p.relname || '\_id'
                                  OR (p.users_table
                                      AND (lower(a.attname) IN ('user_id', 'student_id')
                                           OR lower(a.attname) LIKE '%\_user\_id'
                                           OR lower(a.attname) LIKE '%\_by\_id')))
          JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'softfk')
           AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
           AND NOT (a.attrelid = p.parent AND a.attnum = pk.attnum)
           -- Not already a foreign key or a soft reference, to any parent.
           AND NOT EXISTS (SELECT FROM pg_constraint con
                            WHERE con.contype = 'f' AND con.conrelid = a.attrelid
                              AND a.attnum = ANY (con.conkey))
           AND NOT EXISTS (SELECT FROM softfk.reference r
                            WHERE r.child_table = a.attrelid AND r.child_attnum = a.attnum)
    ),
    -- Of those, the ones comparable with the parent key, as a soft reference needs.
    candidate AS (
        SELECT 'candidate'::text, nm.attrelid, nm.attnum, nm.parent, nm.parent_attnum, NULL::text,
               false, NULL::name, NULL::text
          FROM named nm
         WHERE EXISTS (SELECT FROM softfk.key_comparison(nm.parent, nm.parent_attnum, nm.attrelid, nm.attnum) k
                        WHERE k.operator IS NOT NULL)
    ),
    found AS (
        SELECT * FROM fk UNION ALL SELECT * FROM registered UNION ALL SELECT * FROM candidate
    )
    SELECT f.kind, f.child::regclass, ca.attname, f.parent::regclass, pa.attname, f.on_delete,
           f.adoptable, greatest(c.reltuples, 0)::bigint,
           -- An index whose first column is the child column: without one, every purge of a
           -- key scans the whole child.
           EXISTS (SELECT FROM pg_index i WHERE i.indrelid = f.child AND i.indkey[0] = f.child_attnum),
           f.constraint_name,
           coalesce(f.note,
                    CASE WHEN NOT EXISTS (SELECT FROM pg_index i
                                           WHERE i.indrelid = f.child AND i.indkey[0] = f.child_attnum)
                         THEN 'no index leads with this column: purges will scan the table' END)
      FROM found f
      JOIN pg_class c ON c.oid = f.child
      JOIN pg_attribute ca ON ca.attrelid = f.child AND ca.attnum = f.child_attnum
      JOIN pg_attribute pa ON pa.attrelid = f.parent AND pa.attnum = f.parent_attnum
     ORDER BY f.parent::regclass::text, f.kind DESC, f.child::regclass::text, ca.attname
$$;
COMMENT ON FUNCTION softfk_discover(regclass) IS
'Columns that reference "referenced" (or any table, when NULL): native foreign keys (kind ''foreign key''; adoptable when softfk_adopt takes them), soft references (''registered''), and unconstrained columns named and typed like references (''candidate''), with the child''s estimated rows, whether an index leads with the column, and the foreign key''s ON DELETE action. Reads only the catalogs.';

-- What softfk_adopt dropped, beyond what the registration says: the constraint's name and
-- the options a soft reference has no place for, so that softfk_revert puts back the same
-- constraint. Goes with its registration.
CREATE TABLE softfk.adopted_foreign_key (
    reference_id       bigint  PRIMARY KEY REFERENCES softfk.reference ON DELETE CASCADE,
    constraint_name    name    NOT NULL,
    on_delete          text    NOT NULL,  -- softfk.referential_action(): 'restrict' comes back as such
    on_update          text    NOT NULL,
    match_full         boolean NOT NULL,
    is_deferrable      boolean NOT NULL,
    initially_deferred boolean NOT NULL
);
COMMENT ON TABLE softfk.adopted_foreign_key IS 'The native foreign keys softfk_adopt replaced: name and options, for softfk_revert';
SELECT pg_catalog.pg_extension_config_dump('softfk.adopted_foreign_key', '');

CREATE FUNCTION softfk.remember_foreign_key(child regclass, constraint_name name) RETURNS void
VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'remember_foreign_key_wrapper';
COMMENT ON FUNCTION softfk.remember_foreign_key(regclass, name) IS
'softfk_adopt: keep the name and options of the foreign key it is about to drop (the caller owns the child).';

CREATE FUNCTION softfk.foreign_key_clause(child regclass, child_column name) RETURNS text
STABLE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'foreign_key_clause_wrapper';
COMMENT ON FUNCTION softfk.foreign_key_clause(regclass, name) IS
'softfk_revert: the [CONSTRAINT name] FOREIGN KEY ... clause equivalent to the soft reference on child.child_column (as adopted, if it was).';

CREATE FUNCTION softfk.lock_for_adopt(child regclass, parent regclass) RETURNS void
VOLATILE LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'lock_for_adopt_wrapper';

CREATE FUNCTION softfk.revert_outside_transaction_block() RETURNS void
VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'revert_outside_transaction_block_wrapper';

-- The schema CREATE EXTENSION put the API in (softfk_add, softfk_drop...), which the
-- search_path of these functions leaves out.
CREATE FUNCTION softfk.api_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_softfk'
$$;

-- Turn the native foreign key on child.child_column into a soft reference, in the caller's
-- transaction: register it (as softfk_add: the caller owns the child and holds REFERENCES on
-- the parent), then drop the constraint. ON DELETE CASCADE becomes 'cascade', SET NULL 'set
-- null', NO ACTION and RESTRICT 'no action' (with a NOTICE: nothing will be purged); SET
-- DEFAULT has no soft equivalent and is refused, as are multi-column keys. Validation is
-- 'deferred'. Locks: SHARE ROW EXCLUSIVE on child and parent to register, then ACCESS
-- EXCLUSIVE on both to drop the constraint (its triggers live on both), held to commit;
-- lock_timeout applies.
CREATE FUNCTION softfk_adopt(child regclass, child_column name)
RETURNS text VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fk record;
    action text;
BEGIN
    IF child IS NULL OR child_column IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN child IS NULL THEN 'child' ELSE 'child_column' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute a
                    WHERE a.attrelid = child AND a.attname = child_column AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', child_column, child
            USING ERRCODE = 'undefined_column';
    END IF;
    SELECT con.conname, con.confrelid::regclass AS parent, con.confdeltype, cardinality(con.conkey) AS columns,
           (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = con.confrelid AND a.attnum = con.confkey[1]) AS parent_column
      INTO fk
      FROM pg_constraint con
     WHERE con.contype = 'f' AND con.conrelid = child AND con.conparentid = 0
       AND con.conkey[1] = (SELECT a.attnum FROM pg_attribute a
                             WHERE a.attrelid = child AND a.attname = child_column AND NOT a.attisdropped)
     ORDER BY cardinality(con.conkey), con.conname
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of table "%" has no foreign key', child_column, child
            USING ERRCODE = 'undefined_object',
                  HINT = 'softfk_add() registers a column that has none; SELECT * FROM softfk_discover() lists them.';
    END IF;
    IF fk.columns > 1 THEN
        RAISE EXCEPTION 'foreign key "%" has % columns', fk.conname, fk.columns
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A soft reference is one column referencing one unique parent column.';
    END IF;
    action := CASE softfk.referential_action(fk.confdeltype)
                   WHEN 'cascade' THEN 'cascade' WHEN 'set null' THEN 'set null'
                   WHEN 'set default' THEN NULL ELSE 'no action' END;
    IF action IS NULL THEN
        RAISE EXCEPTION 'foreign key "%" is ON DELETE SET DEFAULT, which a soft reference cannot do', fk.conname
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Change it to another ON DELETE action first, or register the column with softfk_add().';
    END IF;
    IF action = 'no action' THEN
        RAISE NOTICE 'foreign key "%" did not delete child rows: the soft reference will not purge anything (on_delete ''no action'')', fk.conname
            USING HINT = 'orphan_report() shows what deleted parents leave behind; softfk_alter(child, column, on_delete => ''cascade'') purges them.';
    END IF;
    -- The locks dropping the constraint takes, first (src/adopt.rs).
    PERFORM softfk.lock_for_adopt(child, fk.parent);
    EXECUTE format('SELECT %I.softfk_add($1, $2, $3, $4, $5, $6)', softfk.api_schema())
       USING child, child_column, fk.parent, fk.parent_column, action, 'deferred'::text;
    -- Its name and options, for softfk_revert.
    PERFORM softfk.remember_foreign_key(child, fk.conname);
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', child, fk.conname);
    RETURN action;
END $$;
COMMENT ON FUNCTION softfk_adopt(regclass, name) IS
'Replace the native foreign key on child.child_column by a soft reference with the matching on_delete (cascade, set null, no action; SET DEFAULT and multi-column keys are refused), validated deferred; returns the on_delete. One transaction; takes ACCESS EXCLUSIVE on child and parent to drop the constraint.';

-- child itself or, when it is partitioned, it and its partitions at every level (leaf: a
-- table that holds rows).
CREATE FUNCTION softfk.table_and_partitions(child regclass)
RETURNS TABLE (relid regclass, isleaf boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.relid, t.isleaf FROM pg_partition_tree(child) t
    UNION ALL
    SELECT child, true WHERE NOT EXISTS (SELECT FROM pg_partition_tree(child))
$$;

-- The native foreign keys from child_column of child (and, when child is partitioned, of its
-- partitions) to the column its soft reference points at: what softfk_revert adds,
-- validates, or finds added by an earlier call that did not finish. A key from the column to
-- some other table is not one of them. (PL/pgSQL: the view it reads is created after it.)
CREATE FUNCTION softfk.foreign_keys_on(child regclass, child_column name)
RETURNS TABLE (relation regclass, constraint_name name, validated boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT con.conrelid::regclass, con.conname, con.convalidated
      FROM @extschema@.softfk_references r
      JOIN pg_attribute pa ON pa.attrelid = r.parent AND pa.attname = r.parent_column
      CROSS JOIN softfk.table_and_partitions(r.child) t
      JOIN pg_attribute a ON a.attrelid = t.relid AND a.attname = r.child_column AND NOT a.attisdropped
      JOIN pg_constraint con ON con.conrelid = t.relid AND con.contype = 'f'
                            AND con.conkey = ARRAY[a.attnum]
                            AND con.confrelid = r.parent AND con.confkey = ARRAY[pa.attnum]
     WHERE r.child = foreign_keys_on.child AND r.child_column = foreign_keys_on.child_column;
END $$;

-- Take off the keys an unfinished softfk_revert added but did not validate.
CREATE FUNCTION softfk.drop_unvalidated_keys(child regclass, child_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fk record;
BEGIN
    FOR fk IN SELECT * FROM softfk.foreign_keys_on(child, child_column) k WHERE NOT k.validated LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.relation, fk.constraint_name);
    END LOOP;
END $$;

-- A native foreign key cannot be validated over orphans: refuse with their count.
CREATE FUNCTION softfk.refuse_orphans(child regclass, child_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    orphans bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (%s) o', softfk.orphan_rows_query(child, child_column)) INTO orphans;
    IF orphans > 0 THEN
        RAISE EXCEPTION 'cannot put back a foreign key on column "%" of table "%": %',
                        child_column, child,
                        CASE WHEN orphans = 1 THEN '1 row references no parent row'
                             ELSE orphans || ' rows reference no parent row' END
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = 'The soft reference is left as it was.',
                  HINT = format('SELECT * FROM orphan_rows(%L, %L) lists them; softfk_purge() purges those whose parent row was deleted since the column was registered.',
                                child::text, child_column);
    END IF;
END $$;

-- softfk_revert, first transaction: the foreign key, NOT VALID. It checks every write from
-- its commit on (so the second step can scan without missing any). The orphan count before it
-- scans the child under no lock but ACCESS SHARE; adding the key takes SHARE ROW EXCLUSIVE on
-- child and parent for a moment and scans nothing. PostgreSQL 15 refuses NOT VALID on a
-- partitioned table: its leaf partitions get the key instead, under the same name.
CREATE FUNCTION softfk.revert_prepare(child regclass, child_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    leaf regclass;
    clause text;
BEGIN
    IF child IS NULL OR child_column IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN child IS NULL THEN 'child' ELSE 'child_column' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM softfk.foreign_key_clause(child, child_column);  -- refuses what has no native key
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
    clause := softfk.foreign_key_clause(child, child_column);  -- (after the drop: the name is free)
    FOR leaf IN SELECT t.relid FROM softfk.table_and_partitions(child) t WHERE t.isleaf LOOP
        EXECUTE format('ALTER TABLE %s ADD %s NOT VALID', leaf, clause);
    END LOOP;
END $$;

-- softfk_revert, second transaction: VALIDATE CONSTRAINT scans the child under SHARE UPDATE
-- EXCLUSIVE (writes go on) and ROW SHARE on the parent, and takes nothing stronger. Orphans
-- written meanwhile (in the soft check's race window, or with validate 'off') fail it: the
-- unvalidated keys are taken off again, the soft reference stays, and it returns false (the
-- procedure commits that, then reports the orphans).
CREATE FUNCTION softfk.revert_validate(child regclass, child_column name) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fk record;
BEGIN
    FOR fk IN SELECT * FROM softfk.foreign_keys_on(child, child_column) k WHERE NOT k.validated LOOP
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', fk.relation, fk.constraint_name);
    END LOOP;
    RETURN true;
EXCEPTION WHEN foreign_key_violation THEN
    PERFORM softfk.drop_unvalidated_keys(child, child_column);
    RETURN false;
END $$;

-- softfk_revert, third transaction: a partitioned table gets its key (core attaches the
-- validated ones of its partitions instead of scanning again), and the soft reference goes.
-- Both take strong locks, for a moment.
CREATE FUNCTION softfk.revert_finish(child regclass, child_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM softfk.foreign_keys_on(child, child_column) k WHERE k.relation = child) THEN
        EXECUTE format('ALTER TABLE %s ADD %s', child, softfk.foreign_key_clause(child, child_column));
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
CREATE PROCEDURE softfk_revert(child regclass, child_column name)
LANGUAGE plpgsql AS $$
DECLARE
    validated boolean;
    message text;
    code text;
    detail text;
BEGIN
    PERFORM softfk.revert_outside_transaction_block();
    PERFORM softfk.revert_prepare(child, child_column);
    COMMIT;
    -- From here on a NOT VALID key is committed: an error (a lock timeout, a cancel) leaves
    -- it, and says so.
    BEGIN
        validated := softfk.revert_validate(child, child_column);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION USING MESSAGE = message, ERRCODE = code,
            DETAIL = concat_ws(' ', nullif(detail, ''), 'The foreign key added NOT VALID by the first step stays, with the soft reference.'),
            HINT = format('CALL softfk_revert(%L, %L) again to finish, or drop the NOT VALID key.', child::text, child_column);
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
        PERFORM softfk.revert_finish(child, child_column);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION USING MESSAGE = message, ERRCODE = code,
            DETAIL = concat_ws(' ', nullif(detail, ''), 'The keys validated by the second step stay; the soft reference is still registered.'),
            HINT = format('CALL softfk_revert(%L, %L) again to finish.', child::text, child_column);
    END;
END $$;
COMMENT ON PROCEDURE softfk_revert(regclass, name) IS
'Replace the soft reference on child.child_column by a native foreign key (the one softfk_adopt dropped, or the equivalent): added NOT VALID and committed, validated without blocking writes and committed, then the soft reference is dropped. Refuses (23503) while the column has orphans; on_delete ''archive'' has no native equivalent (0A000). CALL it outside a transaction block.';

-- Float keys become text that reads back exactly; a partitioned parent's deletes are
-- captured row by row, in whichever partition they happen (sql/purge.sql).
CREATE OR REPLACE FUNCTION softfk.capture_deleted_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Keys as text the same way whatever the deleting session's settings (src/purge.rs reads them
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

CREATE OR REPLACE FUNCTION softfk.sync_capture(parent regclass)
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

SELECT softfk.sync_capture(p.parent_table) FROM (SELECT DISTINCT parent_table FROM softfk.reference) p;
