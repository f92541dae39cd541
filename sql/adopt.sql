-- Adopting an existing schema: finding the columns that reference a parent (native foreign
-- keys, registered soft references, and unconstrained columns that look like references).
-- Catalog-only: no table is scanned, so a database with hundreds of references answers at
-- once.

-- Columns whose name says they hold a key of `parent`: <parent>_id and *_<parent>_id for any
-- parent; for a users table (a name containing "user") also user_id, *_user_id, *_by_id
-- (created_by_id, history_user_id...) and student_id, as Django and Open edX name them.
CREATE FUNCTION softfk.looks_like_reference(column_name name, parent regclass)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH p AS (SELECT lower(c.relname) AS relname FROM pg_class c WHERE c.oid = parent)
    SELECT lower(column_name) = p.relname || '_id'
        OR lower(column_name) LIKE '%\_' || p.relname || '\_id'
        OR (p.relname LIKE '%user%'
            AND (lower(column_name) IN ('user_id', 'student_id')
                 OR lower(column_name) LIKE '%\_user\_id'
                 OR lower(column_name) LIKE '%\_by\_id'))
      FROM p
$$;

CREATE FUNCTION softfk_discover(referenced regclass DEFAULT NULL)
RETURNS TABLE (
    kind            text,
    child           regclass,
    child_column    name,
    parent          regclass,
    parent_column   name,
    on_delete       text,
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
               CASE con.confdeltype WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null'
                    WHEN 'd' THEN 'set default' WHEN 'r' THEN 'restrict' ELSE 'no action' END AS on_delete,
               con.conname AS constraint_name,
               CASE WHEN cardinality(con.conkey) > 1
                    THEN format('multi-column foreign key (%s columns): cannot be adopted', cardinality(con.conkey))
               END AS note
          FROM pg_constraint con
         WHERE con.contype = 'f' AND con.conparentid = 0
           AND (referenced IS NULL OR con.confrelid = referenced)
    ),
    registered AS (
        SELECT 'registered'::text, r.child_table::oid, r.child_attnum, r.parent_table::oid,
               r.parent_attnum, r.on_delete, NULL::name, NULL::text
          FROM softfk.reference r
         WHERE referenced IS NULL OR r.parent_table = referenced
    ),
    -- Parents to look for candidates of: the one asked about, or every table some foreign
    -- key or soft reference already points at.
    parents AS (
        SELECT referenced::oid AS parent WHERE referenced IS NOT NULL
        UNION
        SELECT parent FROM fk WHERE referenced IS NULL
        UNION
        SELECT r.parent_table FROM softfk.reference r WHERE referenced IS NULL
    ),
    candidate AS (
        SELECT 'candidate'::text, a.attrelid, a.attnum, p.parent, pk.attnum, NULL::text,
               NULL::name, NULL::text
          FROM parents p
          -- The parent's key: its single-column primary key.
          JOIN pg_index i ON i.indrelid = p.parent AND i.indisprimary AND i.indnkeyatts = 1
          JOIN pg_attribute pk ON pk.attrelid = p.parent AND pk.attnum = i.indkey[0]
          JOIN pg_attribute a ON a.attnum > 0 AND NOT a.attisdropped
                             AND softfk.looks_like_reference(a.attname, p.parent)
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
           -- Comparable with the parent key, as a soft reference needs.
           AND EXISTS (SELECT FROM softfk.key_comparison(p.parent, pk.attnum, a.attrelid, a.attnum) k
                        WHERE k.operator IS NOT NULL)
    ),
    found AS (
        SELECT * FROM fk UNION ALL SELECT * FROM registered UNION ALL SELECT * FROM candidate
    )
    SELECT f.kind, f.child::regclass, ca.attname, f.parent::regclass, pa.attname, f.on_delete,
           greatest(c.reltuples, 0)::bigint,
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
'Columns that reference "referenced" (or any table, when NULL): native foreign keys (kind ''foreign key''), soft references (''registered''), and unconstrained columns named and typed like references (''candidate''), with the child''s estimated rows, whether an index leads with the column, and the foreign key''s ON DELETE action. Reads only the catalogs.';

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
    action := CASE fk.confdeltype WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null'
                                  WHEN 'd' THEN NULL ELSE 'no action' END;
    IF action IS NULL THEN
        RAISE EXCEPTION 'foreign key "%" is ON DELETE SET DEFAULT, which a soft reference cannot do', fk.conname
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Change it to another ON DELETE action first, or register the column with softfk_add().';
    END IF;
    IF action = 'no action' THEN
        RAISE NOTICE 'foreign key "%" did not delete child rows: the soft reference will not purge anything (on_delete ''no action'')', fk.conname
            USING HINT = 'orphan_report() shows what deleted parents leave behind; softfk_alter(child, column, on_delete => ''cascade'') purges them.';
    END IF;
    -- (softfk_add lives in the extension's schema, which this function's search_path omits.)
    EXECUTE format('SELECT %I.softfk_add($1, $2, $3, $4, $5, %L)',
                   (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                     WHERE e.extname = 'pg_softfk'), 'deferred')
       USING child, child_column, fk.parent, fk.parent_column, action;
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', child, fk.conname);
    RETURN action;
END $$;
COMMENT ON FUNCTION softfk_adopt(regclass, name) IS
'Replace the native foreign key on child.child_column by a soft reference with the matching on_delete (cascade, set null, no action; SET DEFAULT and multi-column keys are refused), validated deferred; returns the on_delete. One transaction; takes ACCESS EXCLUSIVE on child and parent to drop the constraint.';
