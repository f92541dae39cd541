-- softfk_revert: a soft reference becomes a native foreign key again; adopt -> revert ->
-- adopt leaves the schema as it was.
CREATE EXTENSION pg_softfk;
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- A schema with a foreign key of each kind, as Django and Open edX write them.
CREATE TABLE auth_user (id int PRIMARY KEY, username text UNIQUE NOT NULL,
                        manager_id int CONSTRAINT auth_user_manager_id_fk REFERENCES auth_user ON DELETE SET NULL);
INSERT INTO auth_user VALUES (1, 'ada', NULL), (2, 'grace', 1), (3, 'edsger', 1);
-- Django's: DEFERRABLE INITIALLY DEFERRED, a hashed name.
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL,
    CONSTRAINT enrollment_user_id_4263a8e2_fk_auth_user_id FOREIGN KEY (user_id)
        REFERENCES auth_user ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE bookmark (id serial PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE SET NULL);
CREATE TABLE grade (id serial PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE RESTRICT);
CREATE TABLE note (id serial PRIMARY KEY, user_id int REFERENCES auth_user MATCH FULL ON UPDATE CASCADE);
CREATE TABLE mention (id serial PRIMARY KEY, username text REFERENCES auth_user (username) ON DELETE CASCADE);
CREATE TABLE badge (id serial PRIMARY KEY, user_id int DEFAULT 1 REFERENCES auth_user ON DELETE SET DEFAULT);
ALTER TABLE auth_user ADD UNIQUE (id, username);
CREATE TABLE membership (user_id int, username text, FOREIGN KEY (user_id, username) REFERENCES auth_user (id, username));
-- A partitioned child, one of whose partitions is partitioned again.
CREATE TABLE login (id int, user_id int REFERENCES auth_user ON DELETE CASCADE, at date) PARTITION BY RANGE (at);
CREATE TABLE login_2026 PARTITION OF login FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE login_2027 PARTITION OF login FOR VALUES FROM ('2027-01-01') TO ('2028-01-01') PARTITION BY HASH (id);
CREATE TABLE login_2027_a PARTITION OF login_2027 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE login_2027_b PARTITION OF login_2027 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO enrollment (user_id) VALUES (1), (2), (3);
INSERT INTO bookmark (user_id) VALUES (2), (NULL);
INSERT INTO grade (user_id) VALUES (3);
INSERT INTO note (user_id) VALUES (1);
INSERT INTO mention (username) VALUES ('grace');
INSERT INTO login SELECT g, 1 + g % 3, date '2026-06-01' + g FROM generate_series(1, 400) g;

-- Every enforced foreign key constraint, partitions' included, as PostgreSQL would dump it.
-- (PostgreSQL 18 keeps an adopted key NOT ENFORCED until softfk_revert replaces it:
-- not_enforced.sql.)
CREATE VIEW foreign_keys AS
SELECT conrelid::regclass::text AS relation, conname, pg_get_constraintdef(oid) AS definition, convalidated
  FROM pg_constraint WHERE contype = 'f' AND softfk.foreign_key_is_enforced(oid);
CREATE TABLE schema_before AS SELECT * FROM foreign_keys;

SELECT child, child_column, softfk_adopt(child, child_column)
  FROM softfk_discover('auth_user')
 WHERE adoptable
 ORDER BY 1, 2;
CREATE TABLE registered_first AS SELECT child, child_column, parent, parent_column, on_delete, validate FROM softfk_references;
SELECT * FROM foreign_keys ORDER BY 1, 2;

-- Back again, every reference, one CALL each (each commits on its own).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT child, child_column FROM softfk_discover('auth_user') WHERE kind = 'registered' ORDER BY 1, 2 LOOP
        CALL softfk_revert(r.child, r.child_column);
    END LOOP;
END $$;
SELECT count(*) AS soft_references FROM softfk_references;
SELECT count(*) AS softfk_triggers FROM pg_trigger WHERE tgname LIKE '%softfk%';
-- The schema is as it was: same names, same definitions (ON UPDATE, MATCH FULL, RESTRICT,
-- DEFERRABLE), validated, partitions included.
SELECT 'missing' AS diff, * FROM (TABLE schema_before EXCEPT TABLE foreign_keys) m
UNION ALL
SELECT 'extra', * FROM (TABLE foreign_keys EXCEPT TABLE schema_before) e;
-- And it behaves as before: RESTRICT refuses, CASCADE cascades. (PostgreSQL 18 reports a
-- RESTRICT violation as 23001, earlier majors as 23503.)
DO $$
BEGIN
    DELETE FROM auth_user WHERE id = 3;
    RAISE EXCEPTION 'RESTRICT did not refuse';
EXCEPTION WHEN foreign_key_violation OR restrict_violation THEN
    RAISE NOTICE 'RESTRICT refused the delete';
END $$;
DELETE FROM auth_user WHERE id = 2;
SELECT user_id FROM enrollment ORDER BY 1;

-- Adopting again gives the same soft references.
SELECT count(*) AS adopted
  FROM (SELECT softfk_adopt(child, child_column) FROM softfk_discover('auth_user')
         WHERE adoptable) a;
SELECT 'missing' AS diff, * FROM (TABLE registered_first EXCEPT SELECT child, child_column, parent, parent_column, on_delete, validate FROM softfk_references) m
UNION ALL
SELECT 'extra', * FROM (SELECT child, child_column, parent, parent_column, on_delete, validate FROM softfk_references EXCEPT TABLE registered_first) e;

SET client_min_messages = notice;
-- A changed on_delete comes back as the new action: RESTRICT, altered to cascade, returns as
-- ON DELETE CASCADE.
SELECT softfk_alter('grade', 'user_id', on_delete => 'cascade');
CALL softfk_revert('grade', 'user_id');
SELECT * FROM foreign_keys WHERE relation = 'grade';

-- A column registered with softfk_add (never a foreign key) gets PostgreSQL's default name.
CREATE TABLE completion (id serial PRIMARY KEY, user_id int);
SELECT softfk_add('completion', 'user_id', 'auth_user', on_delete => 'set null');
CALL softfk_revert('completion', 'user_id');
SELECT * FROM foreign_keys WHERE relation = 'completion';

-- Refused while the column has orphans, with their count, changing nothing.
SELECT softfk_alter('enrollment', 'user_id', validate => 'off');
INSERT INTO enrollment (user_id) VALUES (42), (43);
CALL softfk_revert('enrollment', 'user_id');
SELECT * FROM foreign_keys WHERE relation = 'enrollment';
SELECT child, child_column, on_delete FROM softfk_references WHERE child = 'enrollment'::regclass;

-- Orphans written after the first step (here: with triggers off) fail the validation: the
-- unvalidated key is taken off again, the soft reference stays.
DELETE FROM enrollment WHERE user_id IN (42, 43);
SELECT softfk.revert_prepare('enrollment', 'user_id', NULL);
SELECT relation, conname, convalidated FROM foreign_keys WHERE relation = 'enrollment';
SET session_replication_role = replica;
INSERT INTO enrollment (user_id) VALUES (44);
RESET session_replication_role;
CALL softfk_revert('enrollment', 'user_id');
SELECT * FROM foreign_keys WHERE relation = 'enrollment';
SELECT child, child_column FROM softfk_references WHERE child = 'enrollment'::regclass;

-- An interrupted revert (first step committed, second not run) finishes on the next call,
-- with what the registration says by then (here on_delete changed in between).
DELETE FROM enrollment WHERE user_id = 44;
SELECT softfk.revert_prepare('enrollment', 'user_id', NULL);
SELECT softfk_alter('enrollment', 'user_id', on_delete => 'no action');
CALL softfk_revert('enrollment', 'user_id');
SELECT * FROM foreign_keys WHERE relation = 'enrollment';
SELECT count(*) AS still_registered FROM softfk_references WHERE child = 'enrollment'::regclass;

-- Refused, changing nothing: archive has no native equivalent; a column with no soft
-- reference; NULLs; inside a transaction block (it commits between its steps).
SELECT softfk_alter('bookmark', 'user_id', on_delete => 'archive');
CALL softfk_revert('bookmark', 'user_id');
CALL softfk_revert('enrollment', 'user_id');
CALL softfk_revert(NULL, 'user_id');
CALL softfk_revert('bookmark', NULL);
BEGIN;
CALL softfk_revert('note', 'user_id');
ROLLBACK;
SELECT child, child_column, on_delete FROM softfk_references ORDER BY 1, 2;

-- on_delete gives the native key's action in the same call: an 'archive' reference goes
-- back to ON DELETE CASCADE without being altered first; refused (orphans), it is left
-- exactly as it was, still 'archive'. An action a native key does not have is refused
-- before anything changes.
CALL softfk_revert('bookmark', 'user_id', on_delete => 'archive');
CALL softfk_revert('bookmark', 'user_id', on_delete => 'set default');
SELECT softfk_alter('bookmark', 'user_id', validate => 'off');
INSERT INTO bookmark (user_id) VALUES (77);
CALL softfk_revert('bookmark', 'user_id', on_delete => 'cascade');
SELECT child, child_column, on_delete, validate FROM softfk_references WHERE child = 'bookmark'::regclass;
SELECT count(*) AS native_keys FROM foreign_keys WHERE relation = 'bookmark';
DELETE FROM bookmark WHERE user_id = 77;
CALL softfk_revert('bookmark', 'user_id', on_delete => 'cascade');
SELECT relation, definition FROM foreign_keys WHERE relation = 'bookmark';
SELECT count(*) AS still_registered FROM softfk_references WHERE child = 'bookmark'::regclass;

DROP VIEW foreign_keys;
DROP TABLE enrollment, bookmark, grade, note, mention, badge, membership, login, completion, auth_user,
           schema_before, registered_first CASCADE;
DROP EXTENSION pg_softfk;
