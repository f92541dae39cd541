-- pg_softfk 0.2.0 -> 0.3.0.
--
-- The mapping of a foreign key's ON DELETE to a soft reference's on_delete is written once,
-- in Rust (softfk.on_delete_of_foreign_key); softfk_discover and softfk_adopt ask it. And
-- PostgreSQL 18's NOT ENFORCED foreign keys: softfk_discover lists them as a kind of their
-- own, softfk_adopt keeps the adopted key NOT ENFORCED there instead of dropping it, and
-- softfk_revert replaces it with the enforced key it adds. Everything here is what a fresh
-- install of 0.3.0 has (tests/tap/009_upgrade.pl compares the two).

-- The soft reference's on_delete that does what a foreign key's ON DELETE action does (the
-- mapping lives with the on_delete enum, src/catalog/reference.rs); NULL for SET DEFAULT.
CREATE FUNCTION softfk.on_delete_of_foreign_key(confdeltype "char") RETURNS text
IMMUTABLE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'on_delete_of_foreign_key_wrapper';

-- Whether a foreign key is enforced. PostgreSQL 18 has NOT ENFORCED ones (only in the
-- catalogs: no triggers, no locks); earlier majors enforce every foreign key.
CREATE FUNCTION softfk.foreign_key_is_enforced(constraint_oid oid) RETURNS boolean
STABLE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'foreign_key_is_enforced_wrapper';

-- Whether this server has NOT ENFORCED foreign keys (PostgreSQL 18 and later).
CREATE FUNCTION softfk.server_has_not_enforced_keys() RETURNS boolean
IMMUTABLE LANGUAGE c AS 'MODULE_PATHNAME', 'server_has_not_enforced_keys_wrapper';

CREATE OR REPLACE FUNCTION softfk_discover(referenced regclass DEFAULT NULL)
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
    -- one is listed by its first column, with a note). On PostgreSQL 18, NOT ENFORCED ones are
    -- a kind of their own: a relationship declared in the catalogs and checked by nothing.
    fk AS (
        SELECT CASE WHEN softfk.foreign_key_is_enforced(con.oid) THEN 'foreign key'
                    ELSE 'not enforced foreign key' END AS kind,
               con.conrelid AS child, con.conkey[1] AS child_attnum,
               con.confrelid AS parent, con.confkey[1] AS parent_attnum,
               softfk.referential_action(con.confdeltype) AS on_delete,
               -- What softfk_adopt takes: one column, an ON DELETE it has an action for, not
               -- registered yet.
               cardinality(con.conkey) = 1
                   AND softfk.on_delete_of_foreign_key(con.confdeltype) IS NOT NULL
                   AND NOT EXISTS (SELECT FROM softfk.reference r
                                    WHERE r.child_table = con.conrelid AND r.child_attnum = con.conkey[1])
                   AS adoptable,
               con.conname AS constraint_name,
               CASE WHEN EXISTS (SELECT FROM softfk.reference r
                                  WHERE r.child_table = con.conrelid AND r.child_attnum = con.conkey[1])
                    THEN 'the column already has a soft reference'
                    WHEN cardinality(con.conkey) > 1
                    THEN format('multi-column foreign key (%s columns): cannot be adopted', cardinality(con.conkey))
                    WHEN softfk.on_delete_of_foreign_key(con.confdeltype) IS NULL
                    THEN format('ON DELETE %s: cannot be adopted', upper(softfk.referential_action(con.confdeltype)))
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
'Columns that reference "referenced" (or any table, when NULL): native foreign keys (kind ''foreign key'', on PostgreSQL 18 also ''not enforced foreign key''; adoptable when softfk_adopt takes them), soft references (''registered''), and unconstrained columns named and typed like references (''candidate''), with the child''s estimated rows, whether an index leads with the column, and the foreign key''s ON DELETE action. Reads only the catalogs.';

CREATE OR REPLACE FUNCTION softfk_adopt(child regclass, child_column name)
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
    SELECT con.oid, con.conname, con.confrelid::regclass AS parent, con.confdeltype, cardinality(con.conkey) AS columns,
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
    action := softfk.on_delete_of_foreign_key(fk.confdeltype);
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
    IF NOT softfk.server_has_not_enforced_keys() THEN
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', child, fk.conname);
    ELSIF softfk.foreign_key_is_enforced(fk.oid) THEN
        -- PostgreSQL 18: the constraint stays, NOT ENFORCED. Its triggers go, and with them
        -- the row locks; the relationship stays in the catalogs for ORMs, diagram tools and
        -- pg_dump.
        EXECUTE format('ALTER TABLE %s ALTER CONSTRAINT %I NOT ENFORCED', child, fk.conname);
    END IF;
    RETURN action;
END $$;
COMMENT ON FUNCTION softfk_adopt(regclass, name) IS
'Replace the native foreign key on child.child_column by a soft reference with the matching on_delete (cascade, set null, no action; SET DEFAULT and multi-column keys are refused), validated deferred; returns the on_delete. One transaction; takes ACCESS EXCLUSIVE on child and parent to drop the constraint, which PostgreSQL 18 keeps instead, NOT ENFORCED (no triggers, no locks; still in the catalogs).';

CREATE OR REPLACE FUNCTION softfk.foreign_keys_on(child regclass, child_column name)
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
     WHERE r.child = foreign_keys_on.child AND r.child_column = foreign_keys_on.child_column
       AND softfk.foreign_key_is_enforced(con.oid);
END $$;

-- PostgreSQL 18: the NOT ENFORCED key softfk_adopt kept gives way to the enforced one
-- softfk_revert adds under its name, in the same transaction.
CREATE FUNCTION softfk.drop_not_enforced_keys(child regclass, child_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT con.conname
          FROM @extschema@.softfk_references r
          JOIN pg_attribute pa ON pa.attrelid = r.parent AND pa.attname = r.parent_column
          JOIN pg_attribute a ON a.attrelid = r.child AND a.attname = r.child_column AND NOT a.attisdropped
          JOIN pg_constraint con ON con.conrelid = r.child AND con.contype = 'f' AND con.conparentid = 0
                                AND con.conkey = ARRAY[a.attnum]
                                AND con.confrelid = r.parent AND con.confkey = ARRAY[pa.attnum]
         WHERE r.child = drop_not_enforced_keys.child AND r.child_column = drop_not_enforced_keys.child_column
           AND NOT softfk.foreign_key_is_enforced(con.oid)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', child, fk.conname);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION softfk.revert_prepare(child regclass, child_column name) RETURNS void
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
    PERFORM softfk.drop_not_enforced_keys(child, child_column);
    clause := softfk.foreign_key_clause(child, child_column);  -- (after the drops: the name is free)
    FOR leaf IN SELECT t.relid FROM softfk.table_and_partitions(child) t WHERE t.isleaf LOOP
        EXECUTE format('ALTER TABLE %s ADD %s NOT VALID', leaf, clause);
    END LOOP;
END $$;
