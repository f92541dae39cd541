-- PostgreSQL 18's NOT ENFORCED foreign keys: a reference declared in standard SQL and checked
-- by nothing. softfk_discover lists them as a kind of their own and softfk_adopt takes one;
-- an adopted enforced key is kept NOT ENFORCED (its triggers, and their row locks, go; the
-- relationship stays in the catalogs); softfk_revert puts back an enforced key under its name.
-- Earlier majors have no NOT ENFORCED keys: there this test stops here.
SELECT current_setting('server_version_num')::int >= 180000 AS has_not_enforced \gset
\if :has_not_enforced
\else
\echo 'PostgreSQL 18 and later only'
\quit
\endif
CREATE EXTENSION pg_softfk;
\set SHOW_CONTEXT never
SET client_min_messages = notice;
CREATE TABLE auth_user (id int PRIMARY KEY);
INSERT INTO auth_user SELECT generate_series(1, 5);
CREATE TABLE note (id int PRIMARY KEY,
                   user_id int REFERENCES auth_user ON DELETE CASCADE NOT ENFORCED);
CREATE TABLE enrollment (id int PRIMARY KEY,
                         user_id int CONSTRAINT enrollment_user_fk REFERENCES auth_user
                                     ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
-- Nothing refuses the orphan of a NOT ENFORCED key.
INSERT INTO note VALUES (1, 1), (2, 99);
INSERT INTO enrollment VALUES (1, 1), (2, 2);
SELECT kind, child, child_column, on_delete, adoptable, constraint_name, note
  FROM softfk_discover('auth_user') ORDER BY child, kind;

-- Adopting the NOT ENFORCED key registers the column (and counts the orphan nothing refused);
-- the key stays as it was.
SELECT softfk_adopt('note', 'user_id');
SELECT conname, conenforced, convalidated FROM pg_constraint
 WHERE conrelid = 'note'::regclass AND contype = 'f';

-- Adopting an enforced key keeps it, NOT ENFORCED: no trigger of it is left on either table.
SELECT softfk_adopt('enrollment', 'user_id');
SELECT conname, conenforced, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'enrollment'::regclass AND contype = 'f';
SELECT count(*) AS triggers_of_the_key FROM pg_trigger t JOIN pg_constraint c ON c.oid = t.tgconstraint
 WHERE c.conname = 'enrollment_user_fk';
SELECT kind, child, adoptable, note FROM softfk_discover('auth_user') ORDER BY child, kind;

-- The soft reference checks writes and purges.
INSERT INTO enrollment VALUES (3, 42);
DELETE FROM auth_user WHERE id = 2;
SELECT child, rows FROM softfk_purge();
SELECT * FROM enrollment ORDER BY id;

-- softfk_revert puts back the enforced key under its name, validated, and drops the soft
-- reference.
CALL softfk_revert('enrollment', 'user_id');
SELECT conname, conenforced, convalidated, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'enrollment'::regclass AND contype = 'f';
SELECT count(*) AS soft_references FROM softfk_references WHERE child = 'enrollment'::regclass;

-- The note's orphan refuses a revert, and leaves the NOT ENFORCED key and the soft reference
-- as they were; softfk_drop leaves the NOT ENFORCED key as it was.
CALL softfk_revert('note', 'user_id');
SELECT conname, conenforced FROM pg_constraint WHERE conrelid = 'note'::regclass AND contype = 'f';
SELECT count(*) AS soft_references FROM softfk_references WHERE child = 'note'::regclass;
SELECT softfk_drop('note', 'user_id');
SELECT conname, conenforced FROM pg_constraint WHERE conrelid = 'note'::regclass AND contype = 'f';

DROP TABLE note, enrollment, auth_user;
DROP EXTENSION pg_softfk;
