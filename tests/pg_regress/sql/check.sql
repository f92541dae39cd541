-- Check: validate => 'deferred' (the default) and 'immediate' install constraint triggers that
-- verify each new or changed child key exists in the parent, without locking the parent row
-- (the isolation specs and the TAP test prove the "without locking" part).
CREATE EXTENSION pg_softfk;
\set VERBOSITY default

-- An int8 parent in a non-public schema with quoted, mixed-case names, and an int4 child.
CREATE SCHEMA "Learning Platform";
CREATE TABLE "Learning Platform"."AuthUser" ("Id" int8 PRIMARY KEY, "LastLogin" timestamptz);
-- Index scans of the parent show how many keys the check probed (the backend's counts only
-- grow within a transaction, so differences are exact; nothing else reads the parent there).
CREATE VIEW parent_probes AS
SELECT coalesce(sum(idx_scan), 0) AS probes
  FROM pg_stat_xact_user_tables WHERE relid = '"Learning Platform"."AuthUser"'::regclass;
CREATE TABLE "Learning Platform"."Enrollment" (
    id serial PRIMARY KEY, "UserId" int4 NOT NULL, course text, "Note" text);
INSERT INTO "Learning Platform"."AuthUser" SELECT g FROM generate_series(1, 10) g;
SELECT softfk_add('"Learning Platform"."Enrollment"', 'UserId', '"Learning Platform"."AuthUser"');

-- Two constraint triggers, deferrable and initially deferred; their names work in
-- SET CONSTRAINTS and are listed by softfk_references.
SELECT tgname, tgdeferrable, tginitdeferred
  FROM pg_trigger WHERE tgrelid = '"Learning Platform"."Enrollment"'::regclass ORDER BY tgname;
SELECT check_triggers FROM softfk_references;

-- Deferred: a missing key is reported at COMMIT, not at the INSERT.
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (1), (42);
SELECT 'the INSERT went through' AS deferred;
COMMIT;
SELECT count(*) AS rows_kept FROM "Learning Platform"."Enrollment";

-- The error carries what a foreign key's does, in its fields: schema, table, and as the
-- constraint the check trigger's name (which SET CONSTRAINTS takes). Drivers expose them
-- (psycopg's diag), and so does GET STACKED DIAGNOSTICS.
DO $$
DECLARE
    state text; schema_name text; table_name text; constraint_name text;
BEGIN
    SET CONSTRAINTS ALL IMMEDIATE;
    INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (42);
EXCEPTION WHEN foreign_key_violation THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, schema_name = SCHEMA_NAME,
                            table_name = TABLE_NAME, constraint_name = CONSTRAINT_NAME;
    RAISE NOTICE 'sqlstate %, schema %, table %, constraint %', state, schema_name, table_name, constraint_name;
END $$;
BEGIN;
SET CONSTRAINTS "Learning Platform"."Enrollment_UserId_softfk_ins" IMMEDIATE;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (42);
ROLLBACK;

-- A parent saved earlier in the same transaction counts (Django saves the user, then
-- enrolls it); with a deferred check, so does one saved after the child.
BEGIN;
INSERT INTO "Learning Platform"."AuthUser" VALUES (11);
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (11);
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (12);
INSERT INTO "Learning Platform"."AuthUser" VALUES (12);
COMMIT;
-- A parent deleted later in the same transaction does not.
BEGIN;
INSERT INTO "Learning Platform"."AuthUser" VALUES (13);
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (13);
DELETE FROM "Learning Platform"."AuthUser" WHERE "Id" = 13;
COMMIT;

-- A parent row on a page that the visibility map marks all-visible (as VACUUM leaves a
-- table no one has changed since) is found without reading the table; a row deleted or
-- updated since is read, and a deleted one is not found.
CREATE TABLE "Learning Platform".vacuumed_user (id int PRIMARY KEY, note text)
    WITH (autovacuum_enabled = off);
INSERT INTO "Learning Platform".vacuumed_user SELECT g FROM generate_series(1, 100) g;
VACUUM "Learning Platform".vacuumed_user;
CREATE TABLE "Learning Platform".vacuumed_child (user_id int);
SELECT softfk_add('"Learning Platform".vacuumed_child', 'user_id',
                  '"Learning Platform".vacuumed_user', validate => 'immediate');
CREATE VIEW vacuumed_parent_reads AS
SELECT coalesce(sum(idx_scan), 0) AS probes, coalesce(sum(idx_tup_fetch), 0) AS rows_read
  FROM pg_stat_xact_user_tables WHERE relid = '"Learning Platform".vacuumed_user'::regclass;
BEGIN;
INSERT INTO "Learning Platform".vacuumed_child VALUES (5);
SELECT * FROM vacuumed_parent_reads;
COMMIT;
DELETE FROM "Learning Platform".vacuumed_user WHERE id = 7;
UPDATE "Learning Platform".vacuumed_user SET note = 'logged in' WHERE id = 6;
BEGIN;
INSERT INTO "Learning Platform".vacuumed_child VALUES (6);
SELECT * FROM vacuumed_parent_reads;
COMMIT;
INSERT INTO "Learning Platform".vacuumed_child VALUES (7);

-- One probe per distinct key, not per row: 1000 rows over 10 users probe 10 keys.
BEGIN;
SELECT probes AS before FROM parent_probes \gset
INSERT INTO "Learning Platform"."Enrollment" ("UserId", course)
SELECT 1 + g % 10, 'course ' || g FROM generate_series(1, 1000) g;
SET CONSTRAINTS ALL IMMEDIATE;
SELECT probes - :before AS probes FROM parent_probes;
-- Once those checks ran, a new row with the same key is probed again.
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (1);
SELECT probes - :before AS probes FROM parent_probes;
COMMIT;

-- pg_softfk.check_dedup_memory is what the keys found by a batch of checks may use; at 0
-- nothing is remembered, and every row's key is probed.
SHOW pg_softfk.check_dedup_memory;
-- (Refused with 22023; the message's wording of the range differs between majors.)
\set VERBOSITY sqlstate
SET pg_softfk.check_dedup_memory = -1;
\set VERBOSITY default
BEGIN;
SET LOCAL pg_softfk.check_dedup_memory = 0;
SELECT probes AS before FROM parent_probes \gset
INSERT INTO "Learning Platform"."Enrollment" ("UserId") SELECT 1 FROM generate_series(1, 100);
SET CONSTRAINTS ALL IMMEDIATE;
SELECT probes - :before AS probes FROM parent_probes;
ROLLBACK;

-- UPDATEs that keep the key probe nothing, even one that assigns the key to itself (as
-- Django's save() does) ...
BEGIN;
SELECT probes AS before FROM parent_probes \gset
UPDATE "Learning Platform"."Enrollment" SET "Note" = 'seen' WHERE "UserId" = 1;
UPDATE "Learning Platform"."Enrollment" SET "UserId" = "UserId" WHERE "UserId" = 2;
SET CONSTRAINTS ALL IMMEDIATE;
SELECT probes - :before AS probes FROM parent_probes;
COMMIT;
-- ... and a changed key is checked.
UPDATE "Learning Platform"."Enrollment" SET "UserId" = 3 WHERE "UserId" = 2;
UPDATE "Learning Platform"."Enrollment" SET "UserId" = 77 WHERE "UserId" = 3;
-- A key changed by a BEFORE UPDATE trigger rather than by the SET list is checked too.
CREATE FUNCTION "Learning Platform".remap_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW."UserId" := 999;
    RETURN NEW;
END $$;
CREATE TRIGGER remap BEFORE UPDATE ON "Learning Platform"."Enrollment"
    FOR EACH ROW WHEN (NEW."Note" = 'remap') EXECUTE FUNCTION "Learning Platform".remap_user();
UPDATE "Learning Platform"."Enrollment" SET "Note" = 'remap' WHERE id = (SELECT min(id) FROM "Learning Platform"."Enrollment");
DROP TRIGGER remap ON "Learning Platform"."Enrollment";
-- A row inserted in this transaction and then updated in another column is still checked
-- (that UPDATE queues no check; the INSERT's check follows the row to its newest version).
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (46);
UPDATE "Learning Platform"."Enrollment" SET "Note" = 'edited' WHERE "UserId" = 46;
COMMIT;
-- An inserted row whose key is then fixed passes.
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (47);
UPDATE "Learning Platform"."Enrollment" SET "UserId" = 4 WHERE "UserId" = 47;
COMMIT;

-- A child row inserted and deleted in the same transaction is not checked ...
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (43), (43);
DELETE FROM "Learning Platform"."Enrollment" WHERE "UserId" = 43;
COMMIT;
-- ... but when only one of two rows with the key is deleted, the other is.
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId", "Note") VALUES (44, 'first'), (44, 'second');
DELETE FROM "Learning Platform"."Enrollment" WHERE "UserId" = 44 AND "Note" = 'first';
COMMIT;

-- SET CONSTRAINTS: by name, the queued checks run at once; ALL IMMEDIATE checks each
-- following statement.
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (48);
SET CONSTRAINTS "Learning Platform"."Enrollment_UserId_softfk_ins" IMMEDIATE;
ROLLBACK;
BEGIN;
SET CONSTRAINTS ALL IMMEDIATE;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (49);
ROLLBACK;

-- Subtransactions: a key whose check was queued in a rolled-back savepoint is not taken as
-- "already queued" afterwards.
BEGIN;
SAVEPOINT before_insert;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (50);
ROLLBACK TO before_insert;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (50);
COMMIT;
-- A check that failed inside a rolled-back savepoint is still due at COMMIT.
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (51);
SAVEPOINT early_check;
SET CONSTRAINTS ALL IMMEDIATE;
ROLLBACK TO early_check;
COMMIT;
-- A savepoint rolled back with its bad row leaves nothing to fail.
BEGIN;
SAVEPOINT bad_row;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (52);
ROLLBACK TO bad_row;
COMMIT;

-- A batch of checks that spans subtransactions: the rows of savepoints released and rolled
-- back fire together at COMMIT, one probe for their key, and the rolled-back orphan is gone.
BEGIN;
SELECT probes AS before FROM parent_probes \gset
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (6);
SAVEPOINT kept;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (6), (6);
RELEASE kept;
SAVEPOINT dropped;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (6), (54);
ROLLBACK TO dropped;
SET CONSTRAINTS ALL IMMEDIATE;
SELECT probes - :before AS probes FROM parent_probes;
COMMIT;
-- A key first found in a subtransaction that rolls back, whose parent it had inserted, is
-- not taken as found afterwards.
BEGIN;
SAVEPOINT with_user;
INSERT INTO "Learning Platform"."AuthUser" VALUES (55);
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (55);
SET CONSTRAINTS ALL IMMEDIATE;
ROLLBACK TO with_user;
SET CONSTRAINTS ALL DEFERRED;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (55);
COMMIT;
-- A parent deleted inside the batch, by another trigger of the same COMMIT, between two
-- checks of its key: the later check probes again, and fails.
CREATE FUNCTION "Learning Platform".retire_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM "Learning Platform"."AuthUser" WHERE "Id" = NEW."UserId";
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER "Enrollment_zz_retire" AFTER INSERT ON "Learning Platform"."Enrollment"
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW."Note" = 'retire')
    EXECUTE FUNCTION "Learning Platform".retire_user();
INSERT INTO "Learning Platform"."AuthUser" VALUES (56), (57);
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId", "Note")
VALUES (56, 'first'), (56, 'retire'), (56, 'after');
COMMIT;
-- (Without a row after it, the retiring row's own check ran before the DELETE.)
BEGIN;
INSERT INTO "Learning Platform"."Enrollment" ("UserId", "Note") VALUES (57, 'first'), (57, 'retire');
COMMIT;
DROP TRIGGER "Enrollment_zz_retire" ON "Learning Platform"."Enrollment";
-- A row inserted and later given its own key again (Django's save()) after its parent was
-- deleted in the same transaction is checked again, though its INSERT check already ran.
INSERT INTO "Learning Platform"."AuthUser" VALUES (58);
BEGIN;
SET CONSTRAINTS ALL IMMEDIATE;
INSERT INTO "Learning Platform"."Enrollment" ("UserId") VALUES (58);
DELETE FROM "Learning Platform"."AuthUser" WHERE "Id" = 58;
UPDATE "Learning Platform"."Enrollment" SET "UserId" = 58 WHERE "UserId" = 58;
ROLLBACK;

-- COPY is checked like INSERT.
COPY "Learning Platform"."Enrollment" ("UserId") FROM stdin;
5
53
\.

-- validate => 'immediate': the same check at the end of each statement.
CREATE TABLE auth_user (id int4 PRIMARY KEY, username varchar(150) UNIQUE NOT NULL);
CREATE TABLE bookmark (id serial PRIMARY KEY, user_id int8, username varchar(150));
INSERT INTO auth_user VALUES (1, 'ada'), (2, 'grace');
SELECT softfk_add('bookmark', 'user_id', 'auth_user', validate => 'immediate');
SELECT tgname, tgdeferrable, tginitdeferred
  FROM pg_trigger WHERE tgrelid = 'bookmark'::regclass ORDER BY tgname;
BEGIN;
INSERT INTO bookmark (user_id) VALUES (1), (2);
INSERT INTO bookmark (user_id) VALUES (3);
ROLLBACK;
-- NULL keys pass.
INSERT INTO bookmark (user_id) VALUES (NULL);
-- A parent inserted by the same statement counts.
WITH new_user AS (INSERT INTO auth_user VALUES (3, 'linus') RETURNING id)
INSERT INTO bookmark (user_id) SELECT id FROM new_user;
-- SET CONSTRAINTS ... DEFERRED defers it to COMMIT.
BEGIN;
SET CONSTRAINTS bookmark_user_id_softfk_ins DEFERRED;
INSERT INTO bookmark (user_id) VALUES (4);
INSERT INTO auth_user VALUES (4, 'barbara');
COMMIT;

-- A varchar child key against a text parent key (compared after the implicit cast).
SELECT softfk_add('bookmark', 'username', 'auth_user', 'username');
INSERT INTO bookmark (username) VALUES ('ada');
INSERT INTO bookmark (username) VALUES ('alan');

-- Changing the mode is one call: softfk_alter. 'off' removes the triggers; turning it back on
-- does not re-check rows written meanwhile (orphan_report() finds them).
SELECT softfk_alter('bookmark', 'user_id', validate => 'off');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'bookmark'::regclass ORDER BY tgname;
INSERT INTO bookmark (user_id) VALUES (99);
SELECT softfk_alter('bookmark', 'user_id', validate => 'deferred');
SELECT tgname, tginitdeferred FROM pg_trigger WHERE tgrelid = 'bookmark'::regclass ORDER BY tgname;
SELECT child, child_column, orphan_rows, sample_keys FROM orphan_report() WHERE child = 'bookmark'::regclass;
INSERT INTO bookmark (user_id) VALUES (98);
-- As with core's foreign keys, an UPDATE that keeps an old orphan's key is not checked.
UPDATE bookmark SET username = NULL WHERE user_id = 99;
-- Not while this transaction's checks are still queued on the child.
BEGIN;
INSERT INTO bookmark (user_id) VALUES (1);
SELECT softfk_alter('bookmark', 'user_id', validate => 'off');
ROLLBACK;
-- softfk_drop removes them.
SELECT softfk_drop('bookmark', 'username');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'bookmark'::regclass ORDER BY tgname;

-- A partitioned child: the triggers are cloned to every partition, also one attached later.
CREATE TABLE completion (user_id int4, block text) PARTITION BY HASH (user_id);
CREATE TABLE completion_0 PARTITION OF completion FOR VALUES WITH (MODULUS 2, REMAINDER 0);
SELECT softfk_add('completion', 'user_id', 'auth_user');
CREATE TABLE completion_1 (block text, user_id int4);
ALTER TABLE completion ATTACH PARTITION completion_1 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO completion SELECT g, 'block' FROM generate_series(1, 4) g;
INSERT INTO completion SELECT g, 'block' FROM generate_series(1, 6) g;

-- A partitioned parent: its key is probed in each partition's index.
CREATE TABLE tenant_user (id int8 PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE tenant_user_low PARTITION OF tenant_user FOR VALUES FROM (0) TO (100);
CREATE TABLE tenant_user_high PARTITION OF tenant_user FOR VALUES FROM (100) TO (MAXVALUE);
INSERT INTO tenant_user VALUES (5), (500);
CREATE TABLE tenant_note (user_id int8);
SELECT softfk_add('tenant_note', 'user_id', 'tenant_user');
INSERT INTO tenant_note VALUES (5), (500);
INSERT INTO tenant_note VALUES (50);

-- Dropping the parent removes the registration and the child's triggers with it.
DROP TABLE tenant_user;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'tenant_note'::regclass;
INSERT INTO tenant_note VALUES (50);

-- The check triggers depend on the key column, yet ALTER COLUMN TYPE of it works: they come
-- off for the ALTER and back on after it (tests/pg_regress/sql/trust.sql has the rest).
ALTER TABLE bookmark ALTER COLUMN user_id TYPE int4;
INSERT INTO bookmark (user_id) VALUES (97);

-- What a check trigger refuses to be.
CREATE TABLE misuse (user_id int);
CREATE TRIGGER misuse BEFORE INSERT ON misuse FOR EACH ROW EXECUTE FUNCTION softfk.check_key('1');
INSERT INTO misuse VALUES (1);
DROP TRIGGER misuse ON misuse;
CREATE CONSTRAINT TRIGGER misuse AFTER INSERT ON misuse FOR EACH ROW EXECUTE FUNCTION softfk.check_key('12345');
INSERT INTO misuse VALUES (1);

DROP SCHEMA "Learning Platform" CASCADE;
DROP TABLE bookmark, completion, tenant_note, misuse, auth_user;
DROP EXTENSION pg_softfk;
