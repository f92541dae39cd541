-- The registry: softfk_add / softfk_drop / softfk_references, and how registrations follow
-- the tables they name through renames and drops.
CREATE EXTENSION pg_softfk;

-- The API sits in the schema the extension was created in (public here); the internal
-- tables in their own schema "softfk", so \dt of the user's schema stays clean.
SELECT e.extname, n.nspname AS api_schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_softfk';
-- The tables: none of pg_softfk's in public, its own in softfk (as \dt lists them; its title
-- differs between majors).
SELECT n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'softfk')
 ORDER BY 1, 2;

CREATE TABLE auth_user (id serial PRIMARY KEY, username text UNIQUE NOT NULL);
CREATE TABLE student_courseenrollment (id serial PRIMARY KEY, user_id int NOT NULL, course_id text);
CREATE TABLE program_enrollment (id serial PRIMARY KEY, user_id int, external_user_key text);

-- Defaults: the parent's primary key, on_delete cascade, validate deferred.
SELECT softfk_add('student_courseenrollment', 'user_id', 'auth_user');
-- Every option spelled out, named arguments, a case-insensitive option word.
SELECT softfk_add(child => 'program_enrollment', child_column => 'user_id',
                  parent => 'auth_user', parent_column => 'id',
                  on_delete => 'SET NULL', validate => 'immediate');
SELECT child, child_column, parent, parent_column, on_delete, validate FROM softfk_references;

-- A parent column other than the primary key works when it has a unique index.
CREATE TABLE auth_user_profile (id serial PRIMARY KEY, username text NOT NULL);
SELECT softfk_add('auth_user_profile', 'username', 'auth_user', 'username', 'no action', 'off');
SELECT child, child_column, parent, parent_column, on_delete, validate FROM softfk_references WHERE child = 'auth_user_profile'::regclass;

-- Renames: of the child table, the child column, the parent table, the parent column.
ALTER TABLE student_courseenrollment RENAME TO enrollment;
ALTER TABLE enrollment RENAME COLUMN user_id TO learner_id;
ALTER TABLE auth_user RENAME TO users;
ALTER TABLE users RENAME COLUMN id TO user_pk;
SELECT child, child_column, parent, parent_column FROM softfk_references ORDER BY child::text;
-- The stored names follow (they are what pg_dump writes out).
SELECT child_table, child_column, parent_table, parent_column FROM softfk.reference ORDER BY child_table::text;
-- Moving a table to another schema is followed too.
CREATE SCHEMA lms;
ALTER TABLE enrollment SET SCHEMA lms;
SELECT child, child_column FROM softfk_references ORDER BY child::text;

-- Dropping the registered child column, the child table, or the parent column forgets the
-- registration (with a NOTICE); nothing broken stays behind.
ALTER TABLE auth_user_profile DROP COLUMN username;
DROP TABLE lms.enrollment;
SELECT child, child_column FROM softfk_references;
-- Dropping the parent forgets every registration that points at it.
CREATE TABLE orders (id serial PRIMARY KEY, user_pk int);
SELECT softfk_add('orders', 'user_pk', 'users');
DROP TABLE users;
SELECT count(*) AS registrations_left FROM softfk.reference;
-- DROP SCHEMA ... CASCADE goes through the same path.
CREATE TABLE lms.account (id int PRIMARY KEY);
CREATE TABLE lms.session (id int PRIMARY KEY, account_id int);
SELECT softfk_add('lms.session', 'account_id', 'lms.account');
DROP SCHEMA lms CASCADE;
SELECT count(*) AS registrations_left FROM softfk.reference;

-- softfk_drop removes one registration; the column can then be registered again.
CREATE TABLE users (id bigint PRIMARY KEY);
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id bigint);
SELECT softfk_add('enrollment', 'user_id', 'users');
SELECT softfk_drop('enrollment', 'user_id');
SELECT count(*) FROM softfk_references;
SELECT softfk_add('enrollment', 'user_id', 'users', on_delete => 'archive');
SELECT child, on_delete FROM softfk_references;

-- Identifiers with quotes, spaces and mixed case, in a non-public schema.
CREATE SCHEMA "Open edX";
CREATE TABLE "Open edX"."Auth User" ("User ID" int PRIMARY KEY);
CREATE TABLE "Open edX"."Course ""Enrollment""" (id int PRIMARY KEY, "Learner Id" int);
SELECT softfk_add('"Open edX"."Course ""Enrollment"""', 'Learner Id', '"Open edX"."Auth User"');
SELECT child, child_column, parent, parent_column FROM softfk_references WHERE parent_column = 'User ID';

-- A self-reference (a manager_id on the user table) is a soft reference like any other.
CREATE TABLE staff (id int PRIMARY KEY, manager_id int);
SELECT softfk_add('staff', 'manager_id', 'staff');
SELECT child, child_column, parent, parent_column FROM softfk_references WHERE child = 'staff'::regclass;

-- A partitioned child, and a partitioned parent whose key is its partition key.
CREATE TABLE events (id bigint, user_id bigint, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT softfk_add('events', 'user_id', 'users');
CREATE TABLE tenants (id int PRIMARY KEY) PARTITION BY HASH (id);
CREATE TABLE tenants_0 PARTITION OF tenants FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE tenants_1 PARTITION OF tenants FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE tenant_users (id int PRIMARY KEY, tenant_id int);
SELECT softfk_add('tenant_users', 'tenant_id', 'tenants');
SELECT child, child_column, parent FROM softfk_references WHERE child IN ('events'::regclass, 'tenant_users'::regclass) ORDER BY 1;

-- Inheritance children are not covered by their parent's reference, as a native foreign key
-- does not cover them: the check, the report and the purge read the registered table ONLY.
-- An inheritance child is registered on its own.
CREATE TABLE staff_contractors (agency text) INHERITS (staff);
INSERT INTO staff VALUES (1, NULL);
INSERT INTO staff_contractors VALUES (2, 99, 'acme');
SELECT child, orphan_rows, rows_examined FROM orphan_report() WHERE child::text LIKE 'staff%' ORDER BY 1;
SELECT softfk_add('staff_contractors', 'manager_id', 'staff', validate => 'off');
SELECT child, orphan_rows, rows_examined FROM orphan_report() WHERE child::text LIKE 'staff%' ORDER BY 1;
DROP TABLE staff_contractors;

-- DROP EXTENSION takes its schema, tables, event triggers, views and the check and capture
-- triggers it put on user tables with it.
SELECT count(*) AS check_triggers FROM pg_trigger WHERE tgname LIKE '%softfk%';
DROP EXTENSION pg_softfk;
SELECT count(*) AS check_triggers_left FROM pg_trigger WHERE tgname LIKE '%softfk%';
SELECT count(*) AS left_behind FROM pg_namespace WHERE nspname = 'softfk';
SELECT count(*) AS event_triggers FROM pg_event_trigger WHERE evtname LIKE 'softfk%';
ALTER TABLE staff RENAME COLUMN manager_id TO boss_id;  -- no event trigger left to fail
DROP SCHEMA "Open edX" CASCADE;
DROP TABLE auth_user_profile, orders, program_enrollment, users, enrollment, staff, events, tenants, tenant_users;
