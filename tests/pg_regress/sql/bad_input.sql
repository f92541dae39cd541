-- Bad input: every refused call raises an error with a SQLSTATE and changes nothing.
CREATE EXTENSION pg_softfk;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE auth_user (id int PRIMARY KEY, username text, email text UNIQUE);
CREATE TABLE enrollment (id int PRIMARY KEY, user_id int NOT NULL, note text, course_key varchar(40));
CREATE TABLE composite_parent (a int, b int, PRIMARY KEY (a, b));
CREATE TABLE no_key_parent (id int);
CREATE TABLE deferrable_parent (id int, UNIQUE (id) DEFERRABLE);
CREATE TABLE partial_parent (id int);
CREATE UNIQUE INDEX ON partial_parent (id) WHERE id > 0;
CREATE VIEW enrollment_view AS SELECT * FROM enrollment;
CREATE MATERIALIZED VIEW enrollment_matview AS SELECT * FROM enrollment;
CREATE SEQUENCE some_sequence;
CREATE TEMP TABLE temp_enrollment (id int, user_id int);

-- Each call below is run by this helper, which reports the error's SQLSTATE, message,
-- detail and hint. Afterwards we check that nothing was registered.
CREATE FUNCTION pg_temp.attempt(call text)
RETURNS TABLE (error_code text, message text, detail text, hint text) LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE call;
    RETURN QUERY SELECT '00000'::text, 'succeeded'::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $$;

\x on
-- Unknown table or column.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('no_such_table', 'user_id', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'no_such_column', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', 'no_such_column')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'ctid', 'auth_user')$$);
-- Types that cannot be compared.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'note', 'auth_user')$$);
-- A parent column without a usable unique index; a parent without a (single-column) key.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', 'username')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'deferrable_parent', 'id')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'partial_parent', 'id')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'no_key_parent')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'composite_parent')$$);
-- Views, sequences, system catalogs, temporary tables, as child or as parent.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment_view', 'user_id', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'enrollment_view', 'id')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment_matview', 'user_id', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('some_sequence', 'last_value', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('pg_class', 'relowner', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'pg_authid', 'oid')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('temp_enrollment', 'user_id', 'auth_user')$$);
-- NULL arguments.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add(NULL, 'user_id', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', NULL, 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', NULL)$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', on_delete => NULL)$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', validate => NULL)$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_drop(NULL, 'user_id')$$);
SELECT * FROM pg_temp.attempt($$SELECT * FROM orphan_rows('enrollment', NULL)$$);
-- Unknown on_delete / validate words: the error lists the valid ones.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', on_delete => 'restrict')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', validate => 'always')$$);
-- 'set null' on a NOT NULL column is refused up front rather than failing at purge time.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', on_delete => 'set null')$$);
-- A column cannot be its own parent.
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('auth_user', 'id', 'auth_user')$$);
-- Not registered.
SELECT * FROM pg_temp.attempt($$SELECT softfk_drop('enrollment', 'user_id')$$);
SELECT * FROM pg_temp.attempt($$SELECT * FROM orphan_rows('enrollment', 'user_id')$$);
\x off

-- None of that registered anything.
SELECT count(*) AS registrations FROM softfk.reference;

-- Registering the same column twice.
SELECT softfk_add('enrollment', 'user_id', 'auth_user');
SELECT softfk_add('enrollment', 'user_id', 'auth_user');
SELECT softfk_add('enrollment', 'user_id', 'auth_user', 'email');
-- varchar compares with text through an implicit cast, as for a native foreign key.
SELECT softfk_add('enrollment', 'course_key', 'auth_user', 'email');
SELECT child, child_column, parent, parent_column FROM softfk_references;

-- A caller who does not own the child table may not register it; a caller without
-- REFERENCES on the parent may not point at it.
CREATE ROLE regress_softfk_intruder;
CREATE TABLE intruder_child (id int PRIMARY KEY, user_id int);
ALTER TABLE intruder_child OWNER TO regress_softfk_intruder;
GRANT USAGE ON SCHEMA public TO regress_softfk_intruder;
SET ROLE regress_softfk_intruder;
SELECT softfk_drop('enrollment', 'user_id');
SELECT softfk_add('enrollment', 'note', 'auth_user');
SELECT softfk_add('intruder_child', 'user_id', 'auth_user');
RESET ROLE;
GRANT REFERENCES ON auth_user TO regress_softfk_intruder;
SET ROLE regress_softfk_intruder;
SELECT softfk_add('intruder_child', 'user_id', 'auth_user', validate => 'off');
RESET ROLE;
SELECT child, child_column FROM softfk_references ORDER BY 1, 2;
-- The registry's tables themselves stay out of reach of ordinary users.
SET ROLE regress_softfk_intruder;
DELETE FROM softfk.reference;
RESET ROLE;

-- A registration whose key type was later changed to something incomparable says so
-- when it is used, instead of running a wrong query. (With validate on, the check triggers
-- depend on the column and ALTER COLUMN TYPE is refused; see check.sql.)
ALTER TABLE intruder_child ALTER COLUMN user_id TYPE text;
SELECT child FROM orphan_report();

-- The rest of the matrix: every other API function given NULLs, wrong types, unknown
-- objects, system catalogs, other table kinds.
CREATE FOREIGN DATA WRAPPER regress_softfk_dummy;
CREATE SERVER regress_softfk_server FOREIGN DATA WRAPPER regress_softfk_dummy;
CREATE FOREIGN TABLE foreign_enrollment (id int, user_id int) SERVER regress_softfk_server;
CREATE UNLOGGED TABLE unlogged_user (id int PRIMARY KEY);
CREATE UNLOGGED TABLE unlogged_enrollment (id int PRIMARY KEY, user_id int);
\x on
SELECT * FROM pg_temp.attempt($$SELECT softfk_add(42, 'user_id', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'user_id', 'auth_user', on_delete => 5)$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('foreign_enrollment', 'user_id', 'auth_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'note', 'foreign_enrollment', 'id')$$);
-- As for a native foreign key: a permanent table may not reference an unlogged one (after a
-- crash the parent is empty and every child row an orphan).
SELECT * FROM pg_temp.attempt($$SELECT softfk_add('enrollment', 'id', 'unlogged_user')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_alter(NULL, 'user_id', on_delete => 'cascade')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_alter('enrollment', NULL, on_delete => 'cascade')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_alter('enrollment', 'user_id')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_alter('enrollment', 'no_such_column', on_delete => 'cascade')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_alter('enrollment', 'user_id', on_delete => 'sometimes')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_alter('pg_class', 'relowner', validate => 'off')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_drop('no_such_table', 'user_id')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_drop('enrollment', NULL)$$);
SELECT * FROM pg_temp.attempt($$SELECT * FROM orphan_rows(NULL, 'user_id')$$);
SELECT * FROM pg_temp.attempt($$SELECT * FROM orphan_rows('pg_class', 'relowner')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_restore(NULL, '1')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_restore('auth_user', NULL)$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_restore('no_such_table', '1')$$);
SELECT * FROM pg_temp.attempt($$SELECT * FROM softfk_discover('no_such_table')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_adopt('pg_class', 'relowner')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_adopt('enrollment', 'no_such_column')$$);
SELECT * FROM pg_temp.attempt($$SELECT softfk_adopt('enrollment', NULL)$$);
\x off
-- Where they should work, they do: nothing archived is nothing restored, a system catalog has
-- nothing to discover, an unlogged child may reference an unlogged or a permanent parent.
SELECT softfk_restore('auth_user', '1') AS restored;
SELECT count(*) AS discovered FROM softfk_discover('pg_class');
SELECT softfk_add('unlogged_enrollment', 'user_id', 'unlogged_user');
SELECT softfk_add('unlogged_enrollment', 'id', 'auth_user', validate => 'off');
SELECT child, child_column, parent FROM softfk_references WHERE child = 'unlogged_enrollment'::regclass ORDER BY 2;
-- Nor can ALTER TABLE make it so later.
ALTER TABLE unlogged_enrollment SET LOGGED;
ALTER TABLE auth_user SET UNLOGGED;
SELECT relname, relpersistence FROM pg_class WHERE relname IN ('unlogged_enrollment', 'auth_user') ORDER BY 1;

-- A child that is also the parent (a manager column), and the longest identifiers PostgreSQL
-- keeps (63 bytes) with quotes, spaces and non-ASCII letters: registered, checked, purged,
-- reported, dropped. Two columns whose names differ only past the length a trigger name can
-- hold still get distinct check triggers.
CREATE TABLE "Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes" (
    id int PRIMARY KEY,
    "manager id; DROP TABLE auth_user; -- column name of 63 bytes: A" int,
    "manager id; DROP TABLE auth_user; -- column name of 63 bytes: B" int);
SELECT octet_length(relname) AS table_bytes FROM pg_class WHERE relname LIKE 'Ünïcode%' AND relkind = 'r';
SELECT softfk_add('"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', 'manager id; DROP TABLE auth_user; -- column name of 63 bytes: A', '"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', on_delete => 'set null');
SELECT softfk_add('"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', 'manager id; DROP TABLE auth_user; -- column name of 63 bytes: B', '"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', on_delete => 'cascade');
SELECT tgname, octet_length(tgname) AS bytes FROM pg_trigger
 WHERE tgrelid = '"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"'::regclass AND NOT tgisinternal ORDER BY 1;
INSERT INTO "Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes" VALUES (1, NULL, NULL), (2, 1, 1), (3, 2, 2);
INSERT INTO "Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes" VALUES (4, 99, NULL);
DELETE FROM "Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes" WHERE id = 1;
SELECT child_column, rows FROM softfk_purge() ORDER BY 1;
SELECT * FROM "Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes" ORDER BY id;
SELECT key FROM orphan_rows('"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', 'manager id; DROP TABLE auth_user; -- column name of 63 bytes: A');
SELECT softfk_drop('"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', 'manager id; DROP TABLE auth_user; -- column name of 63 bytes: A');
SELECT softfk_drop('"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"', 'manager id; DROP TABLE auth_user; -- column name of 63 bytes: B');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = '"Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes"'::regclass AND NOT tgisinternal;

DROP EXTENSION pg_softfk;
DROP TABLE "Ünïcode ""quoted"" table, a name of sixty-three bytes: 63 bytes", unlogged_enrollment, unlogged_user;
DROP FOREIGN TABLE foreign_enrollment;
DROP SERVER regress_softfk_server;
DROP FOREIGN DATA WRAPPER regress_softfk_dummy;
DROP MATERIALIZED VIEW enrollment_matview;
DROP TABLE intruder_child, auth_user, enrollment, composite_parent, no_key_parent, deferrable_parent, partial_parent CASCADE;
DROP SEQUENCE some_sequence;
REVOKE USAGE ON SCHEMA public FROM regress_softfk_intruder;
DROP ROLE regress_softfk_intruder;
