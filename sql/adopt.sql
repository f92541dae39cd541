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

CREATE FUNCTION softfk.foreign_key_clause(child regclass, child_column name, on_delete text) RETURNS text
STABLE LANGUAGE c SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'foreign_key_clause_wrapper';
COMMENT ON FUNCTION softfk.foreign_key_clause(regclass, name, text) IS
'softfk_revert: the [CONSTRAINT name] FOREIGN KEY ... clause equivalent to the soft reference on child.child_column (as adopted, if it was), with ON DELETE on_delete unless it is NULL.';

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
