-- The purge: after a parent row is deleted, each soft reference's on_delete action is applied
-- to the child rows that referenced it. Here softfk_purge() runs the engine step by step (the
-- background worker is off in this cluster; the TAP tests run it).
CREATE EXTENSION pg_softfk;
SET client_min_messages = warning;

CREATE TABLE auth_user (id int PRIMARY KEY, username text UNIQUE);
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 10) g;
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL, course text);
CREATE TABLE bookmark (id serial PRIMARY KEY, user_id int, title text);
CREATE TABLE history (id serial PRIMARY KEY, user_id int, event text);
CREATE TABLE grade (id serial PRIMARY KEY, user_id int, score int);
INSERT INTO enrollment (user_id, course) SELECT u, 'course' || c FROM generate_series(1, 10) u, generate_series(1, 3) c;
INSERT INTO bookmark (user_id, title) SELECT u, 'page' || u FROM generate_series(1, 10) u;
INSERT INTO bookmark (user_id, title) VALUES (NULL, 'anonymous');
INSERT INTO history (user_id, event) SELECT u, e FROM generate_series(1, 10) u, unnest(ARRAY['login', 'logout']) e;
INSERT INTO grade (user_id, score) SELECT u, 90 FROM generate_series(1, 10) u;

-- 'set null' needs a nullable column: refused at registration, before anything changes.
SELECT softfk_add('enrollment', 'user_id', 'auth_user', on_delete => 'set null');
SELECT softfk_add('enrollment', 'user_id', 'auth_user', on_delete => 'cascade');
SELECT softfk_add('bookmark', 'user_id', 'auth_user', on_delete => 'set null');
SELECT softfk_add('history', 'user_id', 'auth_user', on_delete => 'archive');
SELECT softfk_add('grade', 'user_id', 'auth_user', on_delete => 'no action');

-- Registering puts three capture triggers on the parent, whatever the number of references.
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'auth_user'::regclass AND NOT tgisinternal ORDER BY tgname;

-- A DELETE queues one row per statement, with every key it deleted.
DELETE FROM auth_user WHERE id IN (1, 2, 3);
SELECT parent_table, parent_column, keys, cause, keys_done, final_pass, final_after IS NULL AS first_pass_pending
  FROM softfk.deletion;
SELECT child, pending_keys, pending_full_scans, oldest_pending_age IS NOT NULL AS has_age FROM softfk_status;

-- The purge applies each action; 'no action' touches nothing.
SELECT * FROM softfk_purge();
SELECT user_id, count(*) FROM enrollment WHERE user_id <= 4 GROUP BY 1 ORDER BY 1;
SELECT id, user_id, title FROM bookmark WHERE id <= 4 OR user_id IS NULL ORDER BY id;
SELECT count(*) AS history_left_for_deleted FROM history WHERE user_id <= 3;
SELECT child_table, child_column, parent_table, key, child_row - 'id' AS row_without_id
  FROM softfk.archived_row ORDER BY key, child_row->>'event';
SELECT count(*) AS grades_kept FROM grade WHERE user_id <= 3;
SELECT child, orphan_rows FROM orphan_report() WHERE orphan_rows > 0;
-- Nothing else was running: the first pass was final and the queue is empty.
SELECT count(*) AS queued FROM softfk.deletion;
SELECT child, on_delete, pending_keys, rows_deleted, rows_nulled, rows_archived,
       last_run_at IS NOT NULL AS ran, last_error FROM softfk_status;
SELECT started_by, status, batches, keys_purged, rows_deleted, rows_nulled, rows_archived, errors
  FROM softfk_purge_runs;

-- Archive round trip: re-create the user, restore the rows, and they are back as they were.
INSERT INTO auth_user VALUES (2, 'user2 again');
SELECT softfk_restore('auth_user', '2');
SELECT id, user_id, event FROM history WHERE user_id = 2 ORDER BY id;
SELECT count(*) AS still_archived FROM softfk.archived_row WHERE key = '2';
SELECT softfk_restore('auth_user', '2') AS nothing_left_to_restore;
SELECT softfk_restore(NULL, '2');
-- The key in its own type, as a driver sends a typed parameter: an integer is an integer.
DELETE FROM auth_user WHERE id = 2;
SELECT count(*) FROM softfk_purge();
INSERT INTO auth_user VALUES (2, 'user2 once more');
SELECT softfk_restore('auth_user', 2) AS restored_by_integer_key;
SELECT softfk_restore('auth_user'::regclass, 2::bigint) AS nothing_left;

-- A key re-created before the purge runs is never purged: every purge statement re-checks
-- that the parent is still absent.
DELETE FROM auth_user WHERE id = 4;
INSERT INTO auth_user VALUES (4, 'user4 reborn');
SELECT * FROM softfk_purge();
SELECT count(*) AS enrollments_of_user4 FROM enrollment WHERE user_id = 4;
SELECT count(*) AS queued FROM softfk.deletion;

-- Deleting and purging in one transaction: the purge waits for the deletion to commit (other
-- transactions could still insert children referencing it until then).
BEGIN;
DELETE FROM auth_user WHERE id = 5;
SELECT * FROM softfk_purge();
SELECT count(*) AS queued_in_transaction FROM softfk.deletion;
COMMIT;
SELECT * FROM softfk_purge();
SELECT count(*) AS enrollments_of_user5 FROM enrollment WHERE user_id = 5;

-- A deletion that rolls back queues nothing.
BEGIN;
DELETE FROM auth_user WHERE id = 6;
ROLLBACK;
SELECT count(*) AS queued FROM softfk.deletion;

-- UPDATE of the parent key: the old key counts as deleted. Other updates queue nothing.
UPDATE auth_user SET username = 'renamed' WHERE id = 6;
SELECT count(*) AS queued_after_other_update FROM softfk.deletion;
UPDATE auth_user SET id = 60 WHERE id = 6;
SELECT keys, cause FROM softfk.deletion;
SELECT * FROM softfk_purge();
SELECT count(*) AS enrollments_of_user6 FROM enrollment WHERE user_id = 6;

-- Small batches: keys_per_batch and rows_per_statement bound every transaction and statement;
-- the result is the same.
SET pg_softfk.keys_per_batch = 1;
SET pg_softfk.rows_per_statement = 2;
DELETE FROM auth_user WHERE id IN (7, 8);
SELECT * FROM softfk_purge();
SELECT batches, keys_purged, rows_deleted, rows_nulled, rows_archived
  FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT count(*) AS enrollments_of_7_and_8 FROM enrollment WHERE user_id IN (7, 8);
RESET pg_softfk.keys_per_batch;
RESET pg_softfk.rows_per_statement;

-- Users deleted one statement at a time make one queue row each: a batch takes the later
-- rows of the same parent column along while their keys fit in keys_per_batch, so four
-- deletions take one batch (two with keys_per_batch = 2), not four.
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(31, 34) g;
INSERT INTO enrollment (user_id, course) SELECT u, 'merge' FROM generate_series(31, 34) u;
DELETE FROM auth_user WHERE id = 31;
DELETE FROM auth_user WHERE id = 32;
DELETE FROM auth_user WHERE id = 33;
DELETE FROM auth_user WHERE id = 34;
SELECT count(*) AS queue_rows FROM softfk.deletion;
SELECT * FROM softfk_purge();
SELECT batches, keys_purged FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT count(*) AS queue_rows_left, (SELECT count(*) FROM enrollment WHERE course = 'merge') AS merge_rows_left
  FROM softfk.deletion;
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(31, 34) g;
INSERT INTO enrollment (user_id, course) SELECT u, 'merge' FROM generate_series(31, 34) u;
DELETE FROM auth_user WHERE id = 31;
DELETE FROM auth_user WHERE id = 32;
DELETE FROM auth_user WHERE id = 33;
DELETE FROM auth_user WHERE id = 34;
SET pg_softfk.keys_per_batch = 2;
SELECT * FROM softfk_purge();
RESET pg_softfk.keys_per_batch;
SELECT batches, keys_purged FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT count(*) AS queue_rows_left, (SELECT count(*) FROM enrollment WHERE course = 'merge') AS merge_rows_left
  FROM softfk.deletion;

-- TRUNCATE of the parent: every child row with a non-NULL key is an orphan.
TRUNCATE auth_user;
SELECT keys, cause FROM softfk.deletion;
SELECT * FROM softfk_purge();
SELECT (SELECT count(*) FROM enrollment) AS enrollments,
       (SELECT count(*) FROM bookmark WHERE user_id IS NOT NULL) AS bookmarks_with_user,
       (SELECT count(*) FROM history) AS history,
       (SELECT count(*) FROM grade) AS grades_untouched;

-- A purge statement that fails (here a trigger refusing the delete) rolls its batch back,
-- leaves the keys queued, and is reported: the run is 'failed' (or 'partial'), the reference
-- shows its last error, the other references of the batch are retried with it next run.
INSERT INTO auth_user VALUES (20, 'user20');
INSERT INTO enrollment (user_id, course) VALUES (20, 'locked');
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'enrollments are never deleted' USING ERRCODE = 'P0001'; END $$;
CREATE TRIGGER keep_enrollments BEFORE DELETE ON enrollment FOR EACH ROW EXECUTE FUNCTION refuse_delete();
DELETE FROM auth_user WHERE id = 20;
SELECT * FROM softfk_purge();
SELECT status, batches, jsonb_path_query_array(errors, '$[*].message') AS messages,
       jsonb_path_query_array(errors, '$[*].sqlstate') AS sqlstates
  FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT child, last_error FROM softfk_status WHERE last_error IS NOT NULL;
SELECT count(*) AS still_queued FROM softfk.deletion;
DROP TRIGGER keep_enrollments ON enrollment;
SELECT * FROM softfk_purge();
SELECT count(*) AS queued FROM softfk.deletion;

-- A bad key in a merged row does not hold back the rows merged with it: the failing
-- reference's keys go to one queue row per merged row, each tried alone, and only the row
-- with the bad key waits.
INSERT INTO auth_user VALUES (21, 'user21'), (22, 'user22');
INSERT INTO enrollment (user_id, course) VALUES (21, 'fine'), (22, 'locked');
CREATE TRIGGER keep_locked BEFORE DELETE ON enrollment FOR EACH ROW
    WHEN (OLD.course = 'locked') EXECUTE FUNCTION refuse_delete();
DELETE FROM auth_user WHERE id = 21;
DELETE FROM auth_user WHERE id = 22;
SELECT * FROM softfk_purge();
SELECT status, batches, keys_purged, jsonb_path_query_array(errors, '$[*].keys') AS failed_keys
  FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT user_id, course FROM enrollment WHERE user_id IN (21, 22);
SELECT keys FROM softfk.deletion;
DROP TRIGGER keep_locked ON enrollment;
SELECT * FROM softfk_purge();
SELECT count(*) AS queued FROM softfk.deletion;

-- softfk_purge() must see what committed since its transaction began.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM softfk_purge();
ROLLBACK;

-- Key types: an int4 child referencing an int8 parent, a varchar child referencing a text
-- parent, a partitioned child (each partition purged), quoted names in another schema.
CREATE SCHEMA "Accounts";
CREATE TABLE "Accounts"."User" ("User Id" bigint PRIMARY KEY, handle text UNIQUE);
INSERT INTO "Accounts"."User" SELECT g, 'h' || g FROM generate_series(1, 4) g;
CREATE TABLE "Accounts"."Login" (id serial, "User Id" int, at date) PARTITION BY RANGE (at);
CREATE TABLE "Accounts"."Login 2025" PARTITION OF "Accounts"."Login" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE "Accounts"."Login 2026" PARTITION OF "Accounts"."Login" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO "Accounts"."Login" ("User Id", at) SELECT u, d FROM generate_series(1, 4) u, unnest(ARRAY['2025-06-01', '2026-06-01']::date[]) d;
CREATE TABLE "Accounts".mention (id serial PRIMARY KEY, handle varchar(20));
INSERT INTO "Accounts".mention (handle) VALUES ('h1'), ('h2'), ('h3');
SELECT softfk_add('"Accounts"."Login"', 'User Id', '"Accounts"."User"');
SELECT softfk_add('"Accounts".mention', 'handle', '"Accounts"."User"', 'handle', on_delete => 'set null');
-- Two referenced columns: the capture triggers name both.
SELECT tgname, tgnargs FROM pg_trigger WHERE tgrelid = '"Accounts"."User"'::regclass AND NOT tgisinternal ORDER BY 1;
DELETE FROM "Accounts"."User" WHERE "User Id" IN (1, 2);
SELECT parent_column, keys FROM softfk.deletion ORDER BY parent_column;
SELECT * FROM softfk_purge() ORDER BY child::text;
SELECT tableoid::regclass, "User Id", at FROM "Accounts"."Login" ORDER BY 2, 3;
SELECT id, handle FROM "Accounts".mention ORDER BY id;

-- A renamed parent column: queued keys and capture triggers follow it.
ALTER TABLE "Accounts"."User" RENAME COLUMN handle TO "Handle";
DELETE FROM "Accounts"."User" WHERE "User Id" = 3;
SELECT parent_column, keys FROM softfk.deletion ORDER BY parent_column;
SELECT * FROM softfk_purge() ORDER BY child::text;
SELECT id, handle FROM "Accounts".mention ORDER BY id;

-- Removing the last reference to a parent column removes it from the capture triggers; the
-- last reference to the parent removes them.
SELECT softfk_drop('"Accounts".mention', 'handle');
SELECT tgname, tgnargs FROM pg_trigger WHERE tgrelid = '"Accounts"."User"'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT softfk_drop('"Accounts"."Login"', 'User Id');
SELECT count(*) AS capture_triggers FROM pg_trigger WHERE tgrelid = '"Accounts"."User"'::regclass AND NOT tgisinternal;
DELETE FROM "Accounts"."User";
SELECT count(*) AS queued_without_references FROM softfk.deletion;

-- The purge runs with the rights of the child table's owner, as core's cascades do: a trigger
-- on the child runs as that owner, never as the worker's superuser.
CREATE ROLE softfk_child_owner;
CREATE TABLE who_ran (role name);
GRANT INSERT ON who_ran TO softfk_child_owner;
INSERT INTO "Accounts"."User" VALUES (4, 'h4');
CREATE TABLE owned_child (id serial PRIMARY KEY, user_id bigint);
INSERT INTO owned_child (user_id) VALUES (4), (4);
CREATE FUNCTION record_role() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.who_ran VALUES (current_user); RETURN NULL; END $$;
CREATE TRIGGER record_role AFTER DELETE ON owned_child FOR EACH STATEMENT EXECUTE FUNCTION record_role();
SELECT softfk_add('owned_child', 'user_id', '"Accounts"."User"');
ALTER TABLE owned_child OWNER TO softfk_child_owner;
DELETE FROM "Accounts"."User" WHERE "User Id" = 4;
SELECT * FROM softfk_purge();
SELECT status, errors FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT role FROM who_ran;
SELECT count(*) AS owned_rows_left FROM owned_child;
-- A purge statement runs with search_path = pg_catalog, pg_temp, and so do the child's
-- triggers it fires: one that names a table without its schema fails, until
-- pg_softfk.child_search_path gives them the path they expect.
INSERT INTO auth_user VALUES (40, 'user40');
INSERT INTO enrollment (user_id, course) VALUES (40, 'audited');
CREATE TABLE deletion_log (user_id int);
CREATE FUNCTION log_enrollment_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO deletion_log VALUES (OLD.user_id); RETURN OLD; END $$;
CREATE TRIGGER log_deletion BEFORE DELETE ON enrollment FOR EACH ROW EXECUTE FUNCTION log_enrollment_deletion();
DELETE FROM auth_user WHERE id = 40;
SELECT * FROM softfk_purge();
SELECT status, jsonb_path_query_array(errors, '$[*].message') AS messages FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SET pg_softfk.child_search_path = '"$user", public';
SELECT * FROM softfk_purge();
RESET pg_softfk.child_search_path;
SELECT * FROM deletion_log;
DROP TRIGGER log_deletion ON enrollment;
DROP FUNCTION log_enrollment_deletion();
DROP TABLE deletion_log;

-- The parent check inside the purge statements answers the child's owner (or whoever may
-- read the parent), nobody else: it would tell which user ids exist.
SELECT id AS owned_child_reference FROM softfk.reference WHERE child_table = 'owned_child'::regclass \gset
CREATE ROLE softfk_stranger;
SET ROLE softfk_child_owner;
SELECT softfk.absent_keys(:owned_child_reference, ARRAY['1', '4']) AS absent_for_the_owner;
SET ROLE softfk_stranger;
SELECT softfk.absent_keys(:owned_child_reference, ARRAY['1', '4']) AS absent_for_a_stranger;
RESET ROLE;
DROP TABLE owned_child, who_ran;
DROP FUNCTION record_role();
DROP ROLE softfk_child_owner, softfk_stranger;

DROP SCHEMA "Accounts" CASCADE;
DROP TABLE auth_user, enrollment, bookmark, history, grade;
DROP FUNCTION refuse_delete();

-- A purge statement asks the parent once, and probes the child's index for its keys. The
-- planner is never shown the keys: shown them, it ran the parent check while estimating the
-- join (twice per statement), and for 1,000 keys chose to read and hash the whole child.
CREATE TABLE member (id int PRIMARY KEY);
INSERT INTO member SELECT generate_series(1, 20000);
CREATE TABLE post (id serial PRIMARY KEY, member_id int NOT NULL, body text);
INSERT INTO post (member_id, body) SELECT 1 + g % 20000, repeat('x', 40) FROM generate_series(1, 40000) g;
CREATE INDEX ON post (member_id);
ANALYZE member, post;
SELECT softfk_add('post', 'member_id', 'member', on_delete => 'cascade');
DELETE FROM member WHERE id <= 1000;
SET track_functions = 'all';
SET pg_softfk.rows_per_statement = 100000;
-- (The statistics of a transaction's own scans and calls, counted from its start: a backend
-- may not have reported those of its earlier transactions yet.)
BEGIN;
SELECT coalesce((SELECT calls FROM pg_stat_xact_user_functions
                  WHERE schemaname = 'softfk' AND funcname = 'absent_keys'), 0) AS checks_before,
       seq_scan AS reads_before, idx_scan AS probes_before
  FROM pg_stat_xact_user_tables WHERE relid = 'post'::regclass \gset
SELECT child, on_delete, rows FROM softfk_purge();
SELECT calls - :checks_before AS parent_checks FROM pg_stat_xact_user_functions
 WHERE schemaname = 'softfk' AND funcname = 'absent_keys';
SELECT seq_scan - :reads_before AS post_read_whole, idx_scan - :probes_before > 0 AS post_probed
  FROM pg_stat_xact_user_tables WHERE relid = 'post'::regclass;
COMMIT;
RESET pg_softfk.rows_per_statement;
SELECT count(*) AS posts_of_deleted_members FROM post WHERE member_id <= 1000;
SELECT softfk_drop('post', 'member_id');
-- A child without an index on the key is read once per statement: asking first which keys
-- have a row there would read it twice.
DROP INDEX post_member_id_idx;
SELECT softfk_add('post', 'member_id', 'member', on_delete => 'cascade');
DELETE FROM member WHERE id <= 2000;
BEGIN;
SELECT seq_scan AS reads_before FROM pg_stat_xact_user_tables WHERE relid = 'post'::regclass \gset
SELECT child, on_delete, rows FROM softfk_purge();
SELECT seq_scan - :reads_before AS post_read_whole FROM pg_stat_xact_user_tables
 WHERE relid = 'post'::regclass;
COMMIT;
RESET track_functions;
SELECT count(*) AS posts_of_deleted_members FROM post WHERE member_id <= 2000;
SELECT softfk_drop('post', 'member_id');
DROP TABLE post, member;

-- A large backlog (here pg_softfk.scan_threshold = 5 keys or more) takes its first pass reading
-- each child once, in block ranges, against the hashed set of its keys, as a hand-written
-- DELETE ... USING does: its queue rows become one, which records where the pass goes on, and
-- each batch ends after the statement that reaches rows_per_statement rows. The final pass
-- goes key by key. The result is the key-by-key one, and a key re-created meanwhile keeps
-- its rows.
CREATE TABLE team (id int PRIMARY KEY);
INSERT INTO team SELECT generate_series(1, 40);
CREATE TABLE membership (id serial PRIMARY KEY, team_id int NOT NULL, pad text);
CREATE TABLE badge (id serial PRIMARY KEY, team_id int, pad text);
CREATE TABLE trophy (id serial PRIMARY KEY, team_id int, pad text);
-- Rows of a team spread over the blocks (about 14 rows a block).
INSERT INTO membership (team_id, pad) SELECT t, repeat('m', 500) FROM generate_series(1, 5) r, generate_series(1, 40) t;
INSERT INTO badge (team_id, pad) SELECT t, repeat('b', 500) FROM generate_series(1, 2) r, generate_series(1, 40) t;
INSERT INTO trophy (team_id, pad) SELECT t, 'trophy ' || t FROM generate_series(1, 40) t;
CREATE INDEX ON membership (team_id);
ANALYZE team, membership, badge, trophy;
SELECT softfk_add('membership', 'team_id', 'team', on_delete => 'cascade');
SELECT softfk_add('badge', 'team_id', 'team', on_delete => 'set null');
SELECT softfk_add('trophy', 'team_id', 'team', on_delete => 'archive');
-- Each membership row the purge deletes notes where the pass was, and what softfk_status
-- says of it.
CREATE TABLE pass_seen (seen serial, in_physical_order bool, at_block bigint, pass text, read numeric);
CREATE FUNCTION note_pass() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pass_seen (in_physical_order, at_block, pass, read)
    SELECT d.scan_reference IS NOT NULL, d.scan_block, s.physical_pass, s.physical_pass_read
      FROM softfk.deletion d, public.softfk_status s
     WHERE d.parent_table = 'public.team'::regclass AND s.child = 'public.membership'::regclass;
    RETURN OLD;
END $$;
CREATE TRIGGER note_pass BEFORE DELETE ON membership FOR EACH ROW EXECUTE FUNCTION note_pass();
DELETE FROM team WHERE id <= 4;
DELETE FROM team WHERE id BETWEEN 5 AND 8;
DELETE FROM team WHERE id BETWEEN 9 AND 12;
INSERT INTO team VALUES (6);
SELECT count(*) AS queue_rows FROM softfk.deletion WHERE parent_table = 'team'::regclass;
SET pg_softfk.scan_threshold = 5;
SET pg_softfk.rows_per_statement = 10;
SELECT child, on_delete, rows FROM softfk_purge() ORDER BY child::text;
SELECT batches, keys_purged, rows_deleted, rows_nulled, rows_archived, errors
  FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT bool_and(in_physical_order) AS in_physical_order, count(DISTINCT at_block) > 1 AS over_several_batches
  FROM pass_seen;
-- softfk_status follows the pass through the child: the first pass, a share read that only
-- grows, from 0 (before the first batch) to most of the child.
SELECT bool_and(pass = 'first') AS status_first_pass, min(read) AS read_first, max(read) BETWEEN 0.5 AND 1 AS read_most,
       count(DISTINCT read) > 2 AS read_moves
  FROM pass_seen;
SELECT count(*) AS read_went_back
  FROM (SELECT read < lag(read) OVER (ORDER BY seen) AS back FROM pass_seen) s WHERE back;
SELECT team_id, count(*) FROM membership WHERE team_id <= 12 GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE team_id IS NULL) AS badges_nulled, count(*) FILTER (WHERE team_id = 6) AS badges_kept
  FROM badge;
SELECT count(*) AS trophies_archived FROM softfk.archived_row WHERE child_table = 'trophy'::regclass;
SELECT count(*) AS queued FROM softfk.deletion;
-- A pass in physical order that fails goes on key by key, where the failing reference is
-- isolated and its keys handed over, and the others are purged.
CREATE FUNCTION refuse_badge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'badge % is kept', OLD.id;
END $$;
CREATE TRIGGER refuse_badge BEFORE UPDATE ON badge FOR EACH ROW EXECUTE FUNCTION refuse_badge();
TRUNCATE pass_seen;
DELETE FROM team WHERE id BETWEEN 13 AND 20;
SELECT child, on_delete, rows FROM softfk_purge() ORDER BY child::text;
SELECT jsonb_path_query_array(errors, '$[*].then') AS then_went_on,
       jsonb_path_query_array(errors, '$[*].message') AS messages
  FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT count(*) AS memberships_left FROM membership WHERE team_id BETWEEN 13 AND 20;
SELECT count(*) AS badges_left FROM badge WHERE team_id BETWEEN 13 AND 20;
SELECT reference_id IS NOT NULL AS for_one_reference, cardinality(keys) AS keys FROM softfk.deletion;
RESET pg_softfk.scan_threshold;
RESET pg_softfk.rows_per_statement;
DROP TABLE membership, badge, trophy, team, pass_seen;
DROP FUNCTION note_pass(), refuse_badge();

-- The archive is never lost silently: DROP EXTENSION (and DROP SCHEMA softfk) is refused while
-- it holds rows, and nothing is dropped; once the rows are copied out or discarded on purpose,
-- it goes.
SELECT count(*) > 0 AS archive_holds_rows FROM softfk.archived_row;
DROP EXTENSION pg_softfk;
DROP SCHEMA softfk CASCADE;
SELECT count(*) AS still_installed FROM pg_extension WHERE extname = 'pg_softfk';
CREATE TABLE kept_rows AS TABLE softfk.archived_row;
TRUNCATE softfk.archived_row;
DROP EXTENSION pg_softfk;
SELECT count(*) > 0 AS kept FROM kept_rows;
DROP TABLE kept_rows;
