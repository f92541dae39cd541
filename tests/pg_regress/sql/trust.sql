-- Trust: what a tenant (a role that owns some child tables, nothing more) can and cannot make
-- pg_softfk do, and keys that must purge exactly what they name.
CREATE EXTENSION pg_softfk;
SET client_min_messages = notice;

CREATE ROLE regress_trust_tenant;
CREATE TABLE auth_user (id int PRIMARY KEY, email text UNIQUE);
INSERT INTO auth_user SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 9) g;
GRANT REFERENCES ON auth_user TO regress_trust_tenant;
CREATE SCHEMA mal AUTHORIZATION regress_trust_tenant;
-- Whom the tenant's functions ran as.
CREATE TABLE public.ran_as (who name, superuser boolean);
GRANT INSERT ON public.ran_as TO PUBLIC;

-- 1. A purge statement runs a child owner's triggers. Whatever they change in the session
--    (here: search_path, with set_config(..., false), which outlives a function's SET
--    clause) is thrown away at the end of the statement, and no name in pg_softfk's SQL is
--    looked up through a search_path: the next statement, which runs as another table's
--    owner (here the superuser), never runs the tenant's domain mal.text and its CHECK.
SET ROLE regress_trust_tenant;
CREATE FUNCTION mal.spy(pg_catalog.text) RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO public.ran_as SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    SELECT true $$;
CREATE DOMAIN mal.text AS pg_catalog.text CHECK (mal.spy(VALUE));
CREATE FUNCTION mal.move_the_path() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'mal, pg_catalog, public', false);
    RETURN OLD;
END $$;
CREATE TABLE mal.aaa_enrollment (id int PRIMARY KEY, user_id int);
CREATE TRIGGER move_the_path BEFORE DELETE ON mal.aaa_enrollment
    FOR EACH ROW EXECUTE FUNCTION mal.move_the_path();
-- A deferred trigger would fire at COMMIT, as whoever commits: the purge fires it at the end
-- of its statement instead, as the child's owner.
CREATE FUNCTION mal.at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran_as SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER at_commit AFTER DELETE ON mal.aaa_enrollment
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mal.at_commit();
INSERT INTO mal.aaa_enrollment VALUES (1, 1), (2, 2);
SELECT softfk_add('mal.aaa_enrollment', 'user_id', 'auth_user', validate => 'off');
RESET ROLE;
-- The superuser's table, purged after the tenant's (references are purged in name order).
CREATE TABLE zz_history (id int PRIMARY KEY, user_id int, event text);
INSERT INTO zz_history VALUES (1, 1, 'login'), (2, 2, 'login');
SELECT softfk_add('zz_history', 'user_id', 'auth_user', on_delete => 'archive');
CREATE TABLE zz_email_log (id int PRIMARY KEY, email text);
INSERT INTO zz_email_log VALUES (1, 'user1@example.org'), (4, 'user4@example.org');
SELECT softfk_add('zz_email_log', 'email', 'auth_user', 'email');
SHOW search_path;
DELETE FROM auth_user WHERE id IN (1, 2);
SELECT child, rows FROM softfk_purge() ORDER BY child::text;
SELECT count(*) AS archived FROM softfk.archived_row;
SELECT who, superuser, count(*) FROM public.ran_as GROUP BY 1, 2;
SHOW search_path;
-- The tenant's trigger may not leave session state behind at all: a purge statement is a
-- restricted operation, like VACUUM's calls of index functions.
SET ROLE regress_trust_tenant;
CREATE OR REPLACE FUNCTION mal.move_the_path() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMPORARY TABLE left_behind (x int);
    RETURN OLD;
END $$;
INSERT INTO mal.aaa_enrollment VALUES (3, 3);
RESET ROLE;
DELETE FROM auth_user WHERE id = 3;
SELECT child, rows FROM softfk_purge();
SELECT last_error FROM softfk_status WHERE child = 'mal.aaa_enrollment'::regclass;
SELECT count(*) AS queued FROM softfk.deletion;
SET ROLE regress_trust_tenant;
DROP TRIGGER move_the_path ON mal.aaa_enrollment;
RESET ROLE;
SELECT child, rows FROM softfk_purge();

-- A check sees the parent rows this very statement deleted as gone.
CREATE TABLE zz_login (id serial PRIMARY KEY, user_id int);
SELECT softfk_add('zz_login', 'user_id', 'auth_user', validate => 'immediate');
WITH gone AS (DELETE FROM auth_user WHERE id = 9 RETURNING id)
INSERT INTO zz_login (user_id) SELECT id FROM gone;
SELECT count(*) AS logins FROM zz_login;

-- 2. softfk_purge() holds the database's purge lock until its transaction ends: not
--    everyone's to call. The lock itself is in a key space that no SQL function reaches
--    (tests/isolation/specs/purge_run_lock.spec).
SET ROLE regress_trust_tenant;
SELECT child, rows FROM softfk_purge();
RESET ROLE;

-- 3. The check trigger acts only on the child it was installed for: attached to another
--    table, it would tell whoever owns that table which keys exist in a parent they cannot
--    read (here: which e-mail addresses are registered).
SELECT r.id AS email_reference FROM softfk.reference r WHERE r.child_table = 'zz_email_log'::regclass \gset
SET ROLE regress_trust_tenant;
CREATE TABLE mal.guesses (email text);
SELECT format('CREATE CONSTRAINT TRIGGER oracle AFTER INSERT ON mal.guesses FOR EACH ROW '
              'EXECUTE FUNCTION softfk.check_key(%s)', :'email_reference') \gexec
INSERT INTO mal.guesses VALUES ('user5@example.org');
INSERT INTO mal.guesses VALUES ('nobody@example.org');
RESET ROLE;

-- 4. What a tenant may read: orphan_report() leaves out the references whose tables it may
--    not read, and says so; softfk_status shows it its own references, and the run log
--    the errors of its own references (messages name keys).
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'this table refuses the purge'; END $$;
CREATE TRIGGER keep_email_log BEFORE DELETE ON zz_email_log FOR EACH ROW EXECUTE FUNCTION refuse_delete();
DELETE FROM auth_user WHERE id = 4;
SELECT child, rows FROM softfk_purge();
DROP TRIGGER keep_email_log ON zz_email_log;
SELECT child, rows FROM softfk_purge();
GRANT SELECT ON auth_user TO regress_trust_tenant;
SET ROLE regress_trust_tenant;
INSERT INTO mal.aaa_enrollment VALUES (404, 404);
SELECT child, orphan_rows FROM orphan_report();
SELECT child, child_column, last_error FROM softfk_status;
SELECT m.message, count(*) FROM softfk_purge_runs,
       jsonb_array_elements_text(jsonb_path_query_array(errors, '$[*].message')) AS m (message)
 GROUP BY 1 ORDER BY 1;
RESET ROLE;
SELECT child, orphan_rows FROM orphan_report() ORDER BY child::text;
SELECT child, child_column, last_error FROM softfk_status ORDER BY child::text;
SELECT m.message, count(*) FROM softfk_purge_runs,
       jsonb_array_elements_text(jsonb_path_query_array(errors, '$[*].message')) AS m (message)
 GROUP BY 1 ORDER BY 1;

-- 5. Float keys are queued as text that reads back exactly, whatever the deleting session's
--    extra_float_digits: the child of 0.1234567890123 is purged, not left as an orphan.
CREATE TABLE measure (k float8 PRIMARY KEY);
CREATE TABLE reading (id int PRIMARY KEY, k float8);
INSERT INTO measure VALUES (0.1234567890123), (2.5);
INSERT INTO reading VALUES (1, 0.1234567890123), (2, 2.5);
SELECT softfk_add('reading', 'k', 'measure');
SET extra_float_digits = -10;
DELETE FROM measure WHERE k < 1;
SELECT child, rows FROM softfk_purge();
RESET extra_float_digits;
SELECT * FROM reading;

-- 6. Keys under a nondeterministic collation are refused: the check (the parent's index)
--    would find 'Alice' for 'alice', the purge (equality in the child) would not.
CREATE COLLATION regress_case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE account (login text COLLATE regress_case_insensitive PRIMARY KEY);
CREATE TABLE login_event (id int PRIMARY KEY, login text);
SELECT softfk_add('login_event', 'login', 'account');
CREATE TABLE handle (login text PRIMARY KEY);
CREATE TABLE mention (id int PRIMARY KEY, login text COLLATE regress_case_insensitive);
SELECT softfk_add('mention', 'login', 'handle');
SELECT count(*) AS registered FROM softfk_references WHERE child IN ('login_event'::regclass, 'mention'::regclass);

-- 7. softfk_restore puts back what was archived, into the table as it is now, or refuses
--    with nothing lost: generated columns are computed again, columns added since get their
--    defaults, and a value whose column was renamed is never dropped silently.
CREATE TABLE certificate (id int PRIMARY KEY, user_id int, grade numeric,
                          percent numeric GENERATED ALWAYS AS (grade * 100) STORED);
INSERT INTO certificate (id, user_id, grade) VALUES (1, 7, 0.9), (2, 8, 0.5);
SELECT softfk_add('certificate', 'user_id', 'auth_user', on_delete => 'archive');
DELETE FROM auth_user WHERE id IN (7, 8);
SELECT child, rows FROM softfk_purge();
ALTER TABLE certificate ADD COLUMN issuer text NOT NULL DEFAULT 'edX';
INSERT INTO auth_user VALUES (7, 'user7@example.org'), (8, 'user8@example.org');
SELECT softfk_restore('auth_user', '7');
SELECT * FROM certificate;
ALTER TABLE certificate RENAME COLUMN grade TO score;
SELECT softfk_restore('auth_user', '8');
SELECT key, child_row->>'grade' AS grade FROM softfk.archived_row WHERE child_table = 'certificate'::regclass;
ALTER TABLE certificate RENAME COLUMN score TO grade;
SELECT softfk_restore('auth_user', '8');
SELECT * FROM certificate ORDER BY id;

-- 8. One broken reference does not hold back the others of the same parent: it gets the
--    deleted keys in a queue row of its own and says why in softfk_status, the others are
--    purged, and orphan_report() reports them and warns about it.
CREATE TABLE team (id int PRIMARY KEY);
INSERT INTO team SELECT generate_series(1, 3);
CREATE TABLE a_roster (id int PRIMARY KEY, team_id int);
CREATE TABLE b_badge (id int PRIMARY KEY, team_id int);
CREATE TABLE c_note (id int PRIMARY KEY, team_id int);
INSERT INTO a_roster VALUES (1, 1), (2, 2), (3, 3);
INSERT INTO b_badge VALUES (1, 1), (2, 2), (3, 3);
INSERT INTO c_note VALUES (1, 1), (2, 2), (3, 3);
SELECT softfk_add('a_roster', 'team_id', 'team', on_delete => 'set null');
SELECT softfk_add('b_badge', 'team_id', 'team', validate => 'off');
SELECT softfk_add('c_note', 'team_id', 'team');
-- A 'set null' column cannot become NOT NULL while the reference says so.
ALTER TABLE a_roster ALTER team_id SET NOT NULL;
-- A trigger refuses; a key column changed to a type the parent key cannot be compared with.
CREATE TRIGGER keep_rosters BEFORE UPDATE ON a_roster FOR EACH ROW EXECUTE FUNCTION refuse_delete();
ALTER TABLE b_badge ALTER team_id TYPE text;
DELETE FROM team WHERE id = 1;
SELECT child, rows FROM softfk_purge();
SELECT child, pending_keys, last_error FROM softfk_status WHERE parent = 'team'::regclass ORDER BY child::text;
SELECT status, jsonb_path_query_array(errors, '$[*].sqlstate') AS sqlstates
  FROM softfk_purge_runs ORDER BY id DESC LIMIT 1;
SELECT child, orphan_rows FROM orphan_report() WHERE parent = 'team'::regclass ORDER BY child::text;
-- Fixed, the handed-over keys are purged; the healthy reference was done already.
DROP TRIGGER keep_rosters ON a_roster;
SELECT softfk_drop('b_badge', 'team_id');
SELECT child, rows FROM softfk_purge();
SELECT count(*) AS queued FROM softfk.deletion;
SELECT * FROM a_roster ORDER BY id;
DROP TABLE a_roster, b_badge, c_note, team;

-- 9. The most common migration of a users table: id integer -> bigint, then the columns
--    referencing it (as Django writes it). The triggers that name the key columns come off
--    for the ALTER and back on after it; checks and purges work on the new types; a change
--    that would leave a checked reference unable to compare its keys is refused, undone.
CREATE TABLE people (id int PRIMARY KEY, name text);
INSERT INTO people VALUES (1, 'ada'), (2, 'alan'), (3, 'grace');
CREATE TABLE membership (id int PRIMARY KEY, person_id int);
CREATE TABLE vote (id int PRIMARY KEY, person_id int);
INSERT INTO membership VALUES (1, 1), (2, 2);
INSERT INTO vote VALUES (1, 1), (2, 3);
SELECT softfk_add('membership', 'person_id', 'people');
SELECT softfk_add('vote', 'person_id', 'people', validate => 'immediate', on_delete => 'set null');
ALTER TABLE people ALTER COLUMN id TYPE bigint USING id::bigint;
ALTER TABLE membership ALTER COLUMN person_id TYPE bigint USING person_id::bigint;
ALTER TABLE vote ALTER COLUMN person_id TYPE bigint, ADD COLUMN weight int;
SELECT tgrelid::regclass, tgname FROM pg_trigger
 WHERE tgrelid IN ('people'::regclass, 'membership'::regclass, 'vote'::regclass) ORDER BY 1, 2;
SELECT child, child_column, validate, check_triggers FROM softfk_references
 WHERE parent = 'people'::regclass ORDER BY child::text;
INSERT INTO membership VALUES (3, 4000000000);
INSERT INTO vote VALUES (3, 42);
DELETE FROM people WHERE id = 1;
SELECT child, rows FROM softfk_purge();
SELECT * FROM membership ORDER BY id;
SELECT id, person_id FROM vote ORDER BY id;
-- To text: the checked references could no longer compare their keys.
ALTER TABLE vote ALTER COLUMN person_id TYPE text;
ALTER TABLE people ALTER COLUMN id TYPE text;
SELECT pg_typeof(person_id) FROM vote LIMIT 1;
-- Another role's ALTER takes nothing off: it fails on its own.
SET ROLE regress_trust_tenant;
ALTER TABLE people ALTER COLUMN id TYPE numeric;
RESET ROLE;
SELECT count(*) AS capture_triggers FROM softfk.capture_triggers('people');
-- The extension goes with its triggers, also those put back.
SELECT count(*) AS tied_to_extension FROM pg_depend d JOIN pg_trigger t ON t.oid = d.objid
 WHERE d.classid = 'pg_trigger'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND t.tgrelid IN ('people'::regclass, 'membership'::regclass, 'vote'::regclass);
DROP TABLE membership, vote, people;

-- 10. A partitioned users table: a key UPDATE within a partition, an UPDATE that moves a row
--     (and its key) to another partition, and a DELETE aimed at one partition are all
--     captured, for the registered parent, and purged.
CREATE TABLE person (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE person_low PARTITION OF person FOR VALUES FROM (1) TO (100);
CREATE TABLE person_high PARTITION OF person FOR VALUES FROM (100) TO (200);
INSERT INTO person VALUES (1), (2), (3), (4);
CREATE TABLE post (id int PRIMARY KEY, person_id int);
INSERT INTO post VALUES (1, 1), (2, 2), (3, 3), (4, 4);
SELECT softfk_add('post', 'person_id', 'person');
UPDATE person SET id = 11 WHERE id = 1;        -- key changed within a partition
UPDATE person SET id = 102 WHERE id = 2;       -- moved to another partition
DELETE FROM person_low WHERE id = 3;           -- aimed at a partition
SELECT parent_table, parent_column, keys, cause FROM softfk.deletion ORDER BY id;
SELECT child, rows FROM softfk_purge();
SELECT * FROM post ORDER BY id;
-- A partition registered as a parent in its own right: a delete through the root is
-- captured for both registered parents, each through its own trigger.
CREATE TABLE low_note (id int PRIMARY KEY, person_id int);
INSERT INTO person VALUES (5);
INSERT INTO post VALUES (5, 5);
INSERT INTO low_note VALUES (1, 4), (2, 5);
SELECT softfk_add('low_note', 'person_id', 'person_low');
DELETE FROM person WHERE id = 5;
SELECT parent_table, keys, cause FROM softfk.deletion ORDER BY parent_table::text;
SELECT child, rows FROM softfk_purge() ORDER BY child::text;
SELECT 'post' AS child, count(*) FROM post WHERE person_id = 5
UNION ALL SELECT 'low_note', count(*) FROM low_note WHERE person_id = 5;
DROP TABLE low_note, post, person;

-- 11. A whole-table purge (after TRUNCATE) whose child keeps its keys — a trigger that puts
--     the old key back — fails with a reason instead of purging the same rows for ever.
CREATE TABLE squad (id int PRIMARY KEY);
INSERT INTO squad VALUES (1), (2);
CREATE TABLE squad_badge (id int PRIMARY KEY, squad_id int);
INSERT INTO squad_badge VALUES (1, 1), (2, 2);
CREATE FUNCTION keep_squad() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.squad_id := OLD.squad_id; RETURN NEW; END $$;
CREATE TRIGGER keep_squad BEFORE UPDATE ON squad_badge FOR EACH ROW EXECUTE FUNCTION keep_squad();
SELECT softfk_add('squad_badge', 'squad_id', 'squad', on_delete => 'set null');
TRUNCATE squad;
SELECT child, rows FROM softfk_purge();
SELECT child, pending_full_scans, last_error FROM softfk_status WHERE parent = 'squad'::regclass;
DROP TRIGGER keep_squad ON squad_badge;
SELECT child, rows FROM softfk_purge();
SELECT * FROM squad_badge ORDER BY id;
DROP TABLE squad_badge, squad;
DROP FUNCTION keep_squad();

DROP TABLE zz_login, certificate, mal.aaa_enrollment, mal.guesses, zz_history, zz_email_log, reading, measure,
    login_event, account, mention, handle, public.ran_as;
DROP FUNCTION refuse_delete();
DROP SCHEMA mal CASCADE;
DROP TABLE auth_user;
DROP COLLATION regress_case_insensitive;
TRUNCATE softfk.archived_row;  -- (DROP EXTENSION keeps an archive that holds rows)
DROP EXTENSION pg_softfk;
DROP ROLE regress_trust_tenant;
