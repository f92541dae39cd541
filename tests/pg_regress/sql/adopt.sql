-- softfk_adopt: a native foreign key becomes a soft reference in one call.
CREATE EXTENSION pg_softfk;
\set SHOW_CONTEXT never
SET client_min_messages = notice;
CREATE TABLE auth_user (id int PRIMARY KEY, username text UNIQUE NOT NULL,
                        manager_id int REFERENCES auth_user ON DELETE SET NULL);
INSERT INTO auth_user VALUES (1, 'ada', NULL), (2, 'grace', NULL), (3, 'edsger', 2);
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES auth_user ON DELETE CASCADE);
CREATE TABLE bookmark (id serial PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE SET NULL);
CREATE TABLE grade (id serial PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE RESTRICT);
CREATE TABLE badge (id serial PRIMARY KEY, user_id int DEFAULT 1 REFERENCES auth_user ON DELETE SET DEFAULT);
CREATE TABLE mention (id serial PRIMARY KEY, username text REFERENCES auth_user (username) ON DELETE CASCADE);
ALTER TABLE auth_user ADD UNIQUE (id, username);
CREATE TABLE membership (user_id int, username text, FOREIGN KEY (user_id, username) REFERENCES auth_user (id, username));
CREATE TABLE login (id serial, user_id int REFERENCES auth_user ON DELETE CASCADE, at date) PARTITION BY RANGE (at);
CREATE TABLE login_2026 PARTITION OF login FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO enrollment (user_id) VALUES (1), (2);
INSERT INTO login (user_id, at) VALUES (1, '2026-03-01');

-- A whole schema in one statement: every adoptable foreign key to auth_user (the SET
-- DEFAULT and the multi-column ones are not).
SELECT child, child_column, on_delete, adoptable, note FROM softfk_discover('auth_user') WHERE kind = 'foreign key';
SELECT child, child_column, softfk_adopt(child, child_column)
  FROM softfk_discover('auth_user')
 WHERE adoptable
 ORDER BY 1, 2;
SELECT child, child_column, parent, parent_column, on_delete, validate FROM softfk_references;
-- The enforced foreign keys left (PostgreSQL 18 keeps the adopted ones NOT ENFORCED:
-- not_enforced.sql).
SELECT conrelid::regclass, conname FROM pg_constraint
 WHERE contype = 'f' AND confrelid = 'auth_user'::regclass AND conparentid = 0
   AND softfk.foreign_key_is_enforced(oid) ORDER BY 1;

-- Refused, changing nothing.
SELECT softfk_adopt('badge', 'user_id');
SELECT softfk_adopt('membership', 'user_id');
SELECT softfk_adopt('enrollment', 'id');
SELECT softfk_adopt(NULL, 'user_id');

-- Adopted references behave as soft references: writes are checked without a lock, deletes
-- purge (worker off in this cluster: softfk_purge()).
INSERT INTO enrollment (user_id) VALUES (42);
DELETE FROM auth_user WHERE id = 2;
SELECT child, child_column, rows FROM softfk_purge() ORDER BY 1;
SELECT user_id FROM enrollment ORDER BY 1;
-- The self-reference too: grace managed edsger.
SELECT id, manager_id FROM auth_user ORDER BY 1;

-- Registering a column that no validated foreign key vouches for (a candidate) first
-- reports the orphans it already has; an adopted foreign key had none to report.
CREATE TABLE completion (id serial PRIMARY KEY, user_id int);
INSERT INTO completion (user_id) VALUES (1), (2), (2), (7), (NULL);
SELECT softfk_add(child, child_column, parent, parent_column)
  FROM softfk_discover('auth_user') WHERE kind = 'candidate';
SELECT softfk_drop('completion', 'user_id');
-- A NOT VALID foreign key vouches for nothing: adopting it reports too.
ALTER TABLE completion ADD FOREIGN KEY (user_id) REFERENCES auth_user NOT VALID;
SELECT softfk_adopt('completion', 'user_id');
SELECT softfk_drop('completion', 'user_id');
-- pg_softfk.orphans_on_add = off skips the count (a very large table, registered at once).
SET pg_softfk.orphans_on_add = off;
SELECT softfk_add('completion', 'user_id', 'auth_user');
RESET pg_softfk.orphans_on_add;

DROP TABLE enrollment, bookmark, grade, badge, mention, membership, login, completion, auth_user;
DROP EXTENSION pg_softfk;
