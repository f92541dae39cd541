# pg_dump keeps registrations (softfk.reference is an extension configuration table), and a
# restore binds them to the right columns even where attribute numbers differ: the child
# below has a dropped column before its key, which a restore does not recreate.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE lms');
$node->safe_psql('lms', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY, username text UNIQUE);
    INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 50) g;

    -- user_id is attribute 3 here and will be attribute 2 after a restore.
    CREATE TABLE enrollment (id int PRIMARY KEY, legacy_flag int, user_id int);
    ALTER TABLE enrollment DROP COLUMN legacy_flag;
    INSERT INTO enrollment SELECT g, g FROM generate_series(1, 60) g;
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');

    -- Registered under one name, renamed afterwards.
    CREATE TABLE bookmark (id int PRIMARY KEY, uid int);
    INSERT INTO bookmark VALUES (1, 1), (2, 77), (3, NULL);
    SELECT softfk_add('bookmark', 'uid', 'auth_user', on_delete => 'set null');
    ALTER TABLE bookmark RENAME COLUMN uid TO user_id;

    -- A quoted, mixed-case table in another schema, referencing a non-key unique column.
    CREATE SCHEMA "Programs";
    CREATE TABLE "Programs"."Program Enrollment" (id int PRIMARY KEY, "Learner Name" text);
    INSERT INTO "Programs"."Program Enrollment" VALUES (1, 'user1'), (2, 'ghost');
    SELECT softfk_add('"Programs"."Program Enrollment"', 'Learner Name', 'auth_user', 'username',
                      on_delete => 'no action', validate => 'off');
});

my $dump = $node->basedir . '/lms.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('lms'), '-f', $dump ], 'pg_dump of a database with registrations');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'), '-f', $dump ],
    'the dump restores into a fresh database');

my $references = q{SELECT child, child_column, parent, parent_column, on_delete, validate
                     FROM softfk_references ORDER BY child::text, child_column};
my $report = q{SELECT child, child_column, parent, parent_column, orphan_rows, orphan_keys,
                      sample_keys, rows_examined FROM orphan_report()};
my $orphans = q{SELECT key FROM orphan_rows('enrollment', 'user_id') ORDER BY key::int};

is($node->safe_psql('restored', $references), $node->safe_psql('lms', $references),
    'softfk_references is identical after restore');
is($node->safe_psql('restored', $report), $node->safe_psql('lms', $report),
    'orphan_report() is identical after restore');
is($node->safe_psql('restored', $orphans), join("\n", 51 .. 60),
    'orphan_rows() finds the same dangling keys after restore');
is($node->safe_psql('lms', q{SELECT child_attnum FROM softfk.reference WHERE child_table = 'enrollment'::regclass}),
    '3', 'before the dump the key is attribute 3');
is($node->safe_psql('restored', q{SELECT child_attnum FROM softfk.reference WHERE child_table = 'enrollment'::regclass}),
    '2', 'after the restore the registration points at attribute 2, where the key now is');
is($node->safe_psql('restored', q{
        SELECT count(*) FROM softfk.reference r
          JOIN pg_attribute a ON a.attrelid = r.child_table AND a.attnum = r.child_attnum
         WHERE a.attname <> r.child_column}),
    '0', 'every restored registration names the column at its attribute number');

# The restored database keeps following renames and drops.
$node->safe_psql('restored', 'ALTER TABLE enrollment RENAME COLUMN user_id TO learner_id');
is($node->safe_psql('restored', q{SELECT child_column FROM softfk_references WHERE child = 'enrollment'::regclass}),
    'learner_id', 'a rename after the restore is followed');
$node->safe_psql('restored', 'DROP TABLE bookmark');
is($node->safe_psql('restored', 'SELECT count(*) FROM softfk_references'),
    '2', 'a drop after the restore forgets that registration');

$node->stop;
done_testing();
