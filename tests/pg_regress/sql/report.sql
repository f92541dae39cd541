-- Detection: orphan_report() and orphan_rows() find exactly the rows a plain hand-written
-- NOT EXISTS query finds, on every shape of key: int4 and int8, a child key of another
-- integer width than the parent's, varchar against text, nullable columns, quoted mixed-case
-- identifiers, non-public schemas, partitioned children. NULL keys are never orphans.
CREATE EXTENSION pg_softfk;

-- No registrations: an empty report, not an error.
SELECT * FROM orphan_report();

CREATE TABLE auth_user (id int PRIMARY KEY, username varchar(150) UNIQUE NOT NULL);
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 100) g;

-- int4 -> int4, NOT NULL; orphans 101 (x3), 150, 200.
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL);
INSERT INTO enrollment (user_id) SELECT g FROM generate_series(1, 100) g;
INSERT INTO enrollment (user_id) VALUES (101), (101), (101), (150), (200);

-- int8 child -> int4 parent, nullable; NULLs are not orphans; orphans 0 and -1.
CREATE TABLE completion (id bigserial PRIMARY KEY, user_id bigint);
INSERT INTO completion (user_id) VALUES (1), (2), (NULL), (NULL), (0), (-1), (99);

-- varchar -> varchar (text opclass) through username; one orphan 'ghost'.
CREATE TABLE bookmark (id serial PRIMARY KEY, username varchar(150));
INSERT INTO bookmark (username) VALUES ('user1'), ('user2'), ('ghost'), (NULL);

-- A non-public schema, mixed-case quoted names; orphans 500, 501.
CREATE SCHEMA "Programs";
CREATE TABLE "Programs"."Program Enrollment" (id serial PRIMARY KEY, "User Id" int);
INSERT INTO "Programs"."Program Enrollment" ("User Id") VALUES (1), (NULL), (500), (501), (3);

-- A partitioned child: orphans in both partitions (777, 888).
CREATE TABLE module (id bigint, student_id int, term int) PARTITION BY LIST (term);
CREATE TABLE module_1 PARTITION OF module FOR VALUES IN (1);
CREATE TABLE module_2 PARTITION OF module FOR VALUES IN (2);
INSERT INTO module VALUES (1, 1, 1), (2, 777, 1), (3, 2, 2), (4, 888, 2), (5, NULL, 2);

-- An int8 parent referenced by an int4 child.
CREATE TABLE big_user (id bigint PRIMARY KEY);
INSERT INTO big_user VALUES (1), (5000000000);
CREATE TABLE big_child (id int PRIMARY KEY, user_id int);
INSERT INTO big_child VALUES (1, 1), (2, 2), (3, NULL);

-- (validate off for enrollment: this file plants more orphans in it after registering.)
SELECT softfk_add('enrollment', 'user_id', 'auth_user', validate => 'off');
SELECT softfk_add('completion', 'user_id', 'auth_user');
SELECT softfk_add('bookmark', 'username', 'auth_user', 'username', on_delete => 'set null');
SELECT softfk_add('"Programs"."Program Enrollment"', 'User Id', 'auth_user');
SELECT softfk_add('module', 'student_id', 'auth_user');
SELECT softfk_add('big_child', 'user_id', 'big_user');

-- The report: one row per registration, in child order.
SELECT child, child_column, parent, parent_column, orphan_rows, orphan_keys, sample_keys,
       rows_examined, elapsed_ms >= 0 AS timed
  FROM orphan_report();

-- The same counts, written by hand with NOT EXISTS.
SELECT 'enrollment' AS child, count(*) FROM enrollment c
 WHERE c.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.id = c.user_id)
UNION ALL
SELECT 'completion', count(*) FROM completion c
 WHERE c.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.id = c.user_id)
UNION ALL
SELECT 'bookmark', count(*) FROM bookmark c
 WHERE c.username IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.username = c.username)
UNION ALL
SELECT 'Program Enrollment', count(*) FROM "Programs"."Program Enrollment" c
 WHERE c."User Id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.id = c."User Id")
UNION ALL
SELECT 'module', count(*) FROM module c
 WHERE c.student_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.id = c.student_id)
UNION ALL
SELECT 'big_child', count(*) FROM big_child c
 WHERE c.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM big_user p WHERE p.id = c.user_id);

-- Row-level inspection: ctid, key and the whole row of each orphan.
SELECT key, child_row FROM orphan_rows('enrollment', 'user_id') ORDER BY child_row->>'id';
SELECT key, child_row FROM orphan_rows('completion', 'user_id') ORDER BY key;
SELECT key FROM orphan_rows('bookmark', 'username');
SELECT key FROM orphan_rows('"Programs"."Program Enrollment"', 'User Id') ORDER BY key;
SELECT key, child_row->>'term' AS term FROM orphan_rows('module', 'student_id') ORDER BY key;
-- (child_table, ctid) leads back to the row, in a partition too.
SELECT e.user_id FROM enrollment e JOIN orphan_rows('enrollment', 'user_id') o ON o.ctid = e.ctid ORDER BY 1;
SELECT o.child_table, m.student_id FROM module m JOIN orphan_rows('module', 'student_id') o
    ON o.child_table = m.tableoid AND o.ctid = m.ctid ORDER BY 2;

-- A parent row that appears clears its orphans; sample_keys holds the ten smallest keys.
INSERT INTO auth_user VALUES (101, 'user101'), (150, 'user150');
INSERT INTO enrollment (user_id) SELECT g FROM generate_series(1001, 1020) g;
SELECT orphan_rows, orphan_keys, sample_keys FROM orphan_report() WHERE child = 'enrollment'::regclass;

-- The report runs with work_mem raised for its anti-join only; the caller's setting is
-- unchanged afterwards.
SET work_mem = '1MB';
SELECT count(*) FROM orphan_report();
SHOW work_mem;
RESET work_mem;

-- It needs only SELECT on the tables: a reader without it gets a permission error.
CREATE ROLE regress_softfk_reader;
SET ROLE regress_softfk_reader;
SELECT count(*) FROM orphan_rows('enrollment', 'user_id');
RESET ROLE;
GRANT SELECT ON enrollment, auth_user TO regress_softfk_reader;
SET ROLE regress_softfk_reader;
SELECT count(*) FROM orphan_rows('enrollment', 'user_id');
RESET ROLE;
REVOKE ALL ON enrollment, auth_user FROM regress_softfk_reader;
DROP ROLE regress_softfk_reader;

DROP EXTENSION pg_softfk;
DROP SCHEMA "Programs" CASCADE;
DROP TABLE auth_user, enrollment, completion, bookmark, module, big_user, big_child;
