-- Security: who may register, who may read orphans, whose rights the purge uses, and that no
-- search_path trick makes pg_softfk run someone's function with more rights than theirs.
CREATE EXTENSION pg_softfk;
SET client_min_messages = warning;

CREATE ROLE regress_softfk_app;      -- owns the child tables
CREATE ROLE regress_softfk_reader;   -- may read one child, not the users table
CREATE ROLE regress_softfk_mallory;  -- owns a schema of traps
CREATE TABLE auth_user (id int PRIMARY KEY);
INSERT INTO auth_user SELECT generate_series(1, 5);
GRANT SELECT ON auth_user TO regress_softfk_app;
CREATE SCHEMA app AUTHORIZATION regress_softfk_app;
GRANT USAGE ON SCHEMA app TO regress_softfk_reader, regress_softfk_mallory;
SET ROLE regress_softfk_app;
CREATE TABLE app.enrollment (id int PRIMARY KEY, user_id int);
CREATE TABLE app.bookmark (id int PRIMARY KEY, user_id int);
INSERT INTO app.enrollment VALUES (1, 1), (2, 2), (3, 9);
GRANT SELECT ON app.enrollment TO regress_softfk_reader;
RESET ROLE;

-- Registering needs what a native foreign key needs: owning the child and REFERENCES on the
-- parent.
SET ROLE regress_softfk_app;
SELECT softfk_add('app.enrollment', 'user_id', 'auth_user');
RESET ROLE;
GRANT REFERENCES ON auth_user TO regress_softfk_app;
SET ROLE regress_softfk_app;
SELECT softfk_add('app.enrollment', 'user_id', 'auth_user', validate => 'off');
SELECT softfk_add('app.bookmark', 'user_id', 'auth_user', on_delete => 'archive');
INSERT INTO app.bookmark VALUES (1, 3);
RESET ROLE;
-- Someone else's table: not theirs to register, change or unregister, even with REFERENCES.
GRANT REFERENCES ON auth_user TO regress_softfk_mallory;
SET ROLE regress_softfk_mallory;
SELECT softfk_add('app.bookmark', 'id', 'auth_user');
SELECT softfk_alter('app.enrollment', 'user_id', on_delete => 'no action');
SELECT softfk_drop('app.enrollment', 'user_id');
RESET ROLE;

-- Orphans are read with the reader's own rights: the child and the parent.
SET ROLE regress_softfk_reader;
SELECT key FROM orphan_rows('app.enrollment', 'user_id');
SELECT child, orphan_rows FROM orphan_report();
RESET ROLE;
GRANT SELECT ON auth_user TO regress_softfk_reader;
SET ROLE regress_softfk_reader;
SELECT key FROM orphan_rows('app.enrollment', 'user_id');
SELECT key FROM orphan_rows('app.bookmark', 'user_id');
RESET ROLE;

-- The archive gives rows back only to who may write them: the stranger's attempt changes
-- nothing, the owner's restores the row.
DELETE FROM auth_user WHERE id = 3;
SELECT child, rows FROM softfk_purge();
SET ROLE regress_softfk_mallory;
SELECT softfk_restore('auth_user', '3');
RESET ROLE;
SELECT count(*) AS still_archived FROM softfk.archived_row;
INSERT INTO auth_user VALUES (3);
SET ROLE regress_softfk_app;
SELECT softfk_restore('auth_user', '3');
SELECT * FROM app.bookmark;
RESET ROLE;

-- Traps: functions and operators that match pg_softfk's internal calls better than the
-- built-in ones do (an exact argument type instead of an implicit cast), in a schema first on
-- the caller's search_path. Each records whom it ran as. pg_softfk pins its own search_path
-- wherever it runs queries (the API functions, the extension owner's queries, the worker),
-- so none may ever run.
CREATE SCHEMA trap AUTHORIZATION regress_softfk_mallory;
GRANT USAGE ON SCHEMA trap TO PUBLIC;
SET ROLE regress_softfk_mallory;
\getenv abs_srcdir PG_ABS_SRCDIR
\set traps :abs_srcdir '/../fixtures/search_path_traps.sql'
\i :traps
RESET ROLE;

-- Everything pg_softfk does, by a superuser and by the app's owner, with the traps first on
-- the path.
SET search_path = trap, public, pg_catalog;
SELECT softfk_add('app.bookmark', 'id', 'auth_user', on_delete => 'no action');
SELECT softfk_alter('app.enrollment', 'user_id', validate => 'deferred');
SELECT child, orphan_rows FROM orphan_report();
SELECT count(*) FROM orphan_rows('app.enrollment', 'user_id');
SELECT kind, child FROM softfk_discover('auth_user');
DELETE FROM auth_user WHERE id = 1;
SELECT child, rows FROM softfk_purge();
INSERT INTO auth_user VALUES (1);
SELECT softfk_drop('app.bookmark', 'id');
DELETE FROM auth_user WHERE id = 3;
-- (softfk_purge() is the extension owner's unless granted: tests/pg_regress/sql/trust.sql.)
GRANT EXECUTE ON FUNCTION softfk_purge() TO regress_softfk_app;
SET ROLE regress_softfk_app;
SET search_path = trap, public, pg_catalog;
INSERT INTO app.enrollment VALUES (4, 4);
SELECT child, rows FROM softfk_purge();
RESET ROLE;
INSERT INTO auth_user VALUES (3);
SET ROLE regress_softfk_app;
SET search_path = trap, public, pg_catalog;
SELECT softfk_restore('auth_user', '3');
SELECT child, orphan_rows FROM orphan_report();
RESET ROLE;
RESET search_path;

-- Keys are never cast to a domain (its CHECK may call anyone's function) nor through an
-- implicit cast whose function a user wrote: the purge and the report would run them as
-- the extension's owner or the child's owner. A parent key of a domain type is handled as its
-- base type; a user's cast is refused at registration.
SET ROLE regress_softfk_app;
CREATE FUNCTION app.watched(int) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO trap.ran_as SELECT current_user WHERE current_user <> 'regress_softfk_app'; SELECT true $$;
CREATE DOMAIN app.user_key AS int CHECK (app.watched(VALUE));
CREATE TABLE app.account (id app.user_key PRIMARY KEY);
INSERT INTO app.account VALUES (1), (2);
CREATE TABLE app.session (id int PRIMARY KEY, account_id int);
INSERT INTO app.session VALUES (1, 1), (2, 2);
SELECT softfk_add('app.session', 'account_id', 'app.account', on_delete => 'cascade');
DELETE FROM app.account WHERE id = 2;
RESET ROLE;
SELECT child, rows FROM softfk_purge();
SELECT child, orphan_rows FROM orphan_report() WHERE child = 'app.session'::regclass;
SET ROLE regress_softfk_app;
CREATE TYPE app.level AS ENUM ('1', '2', '3');
CREATE FUNCTION app.level_number(app.level) RETURNS int LANGUAGE sql
    AS $$ SELECT trap.record()::int * 0 + $1::text::int $$;
CREATE CAST (app.level AS int) WITH FUNCTION app.level_number(app.level) AS IMPLICIT;
CREATE TABLE app.badge (id int PRIMARY KEY, level app.level);
SELECT softfk_add('app.badge', 'level', 'auth_user');
RESET ROLE;

-- Adopting and reverting need what the foreign key itself needs: owning the child and
-- REFERENCES on the parent (not UPDATE on it, which LOCK TABLE would ask for).
SET ROLE regress_softfk_app;
CREATE TABLE app.note (id int PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE CASCADE);
SELECT softfk_adopt('app.note', 'user_id');
CALL softfk_revert('app.note', 'user_id');
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'app.note'::regclass AND contype = 'f';
RESET ROLE;
SELECT who, count(*) FROM trap.ran_as GROUP BY who;

DROP SCHEMA trap, app CASCADE;
DROP TABLE auth_user;
DROP EXTENSION pg_softfk;
DROP ROLE regress_softfk_app, regress_softfk_reader, regress_softfk_mallory;
