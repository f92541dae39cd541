# The purge background workers in normal operation: with nothing but
# shared_preload_libraries = 'pg_softfk', a launcher runs, a database where the extension is
# created gets a purge worker (also one created later), and the worker alone
# purges the children of deleted parents: cascade rows are deleted, set null rows nulled,
# archive rows moved into softfk.archived_row, and the queue, softfk_status and
# softfk_purge_runs say so. pg_softfk.purge_worker is reloadable, a re-created parent keeps
# its rows, and a worker stopped with SIGTERM is replaced.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use File::Basename qw(dirname);

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
# No transaction but the test's own may hold a transaction id: one that does (an autovacuum
# ANALYZE) when a purge starts rightly defers the key's final pass to the next naptime, which
# below is an hour on purpose.
$node->append_conf('postgresql.conf', 'autovacuum = off');
$node->start;

my $launcher = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_softfk launcher'};
# The purge workers connected to one database.
sub workers_of
{
	my ($db) = @_;
	return qq{SELECT count(*) FROM pg_stat_activity
	           WHERE backend_type = 'pg_softfk purge' AND datname = '$db'};
}
sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres', qq{SELECT pid FROM pg_stat_activity
	           WHERE backend_type = 'pg_softfk purge' AND datname = '$db'});
}

# A database that never gets the extension, and one that gets it right away.
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql('postgres', 'CREATE DATABASE lms');
$node->safe_psql('lms', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY, username text NOT NULL);
    INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 1000) g;

    -- Three children, one per action. Every user has rows in each.
    CREATE TABLE enrollment (id int PRIMARY KEY, user_id int NOT NULL, course text);
    INSERT INTO enrollment SELECT g, g % 1000 + 1, 'course' || g % 7 FROM generate_series(1, 3000) g;
    CREATE INDEX ON enrollment (user_id);
    CREATE TABLE profile_link (id int PRIMARY KEY, user_id int, url text);
    INSERT INTO profile_link SELECT g, g % 1000 + 1, 'https://x/' || g FROM generate_series(1, 2000) g;
    CREATE INDEX ON profile_link (user_id);
    CREATE TABLE certificate (id int PRIMARY KEY, user_id int NOT NULL, grade numeric);
    INSERT INTO certificate SELECT g, g % 1000 + 1, g % 100 / 10.0 FROM generate_series(1, 1500) g;
    CREATE INDEX ON certificate (user_id);

    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
    SELECT softfk_add('profile_link', 'user_id', 'auth_user', on_delete => 'set null');
    SELECT softfk_add('certificate', 'user_id', 'auth_user', on_delete => 'archive');
});

ok($node->poll_query_until('postgres', $launcher, '1'),
    'one launcher runs (backend_type pg_softfk launcher)');
ok($node->poll_query_until('postgres', workers_of('lms'), '1'),
    'CREATE EXTENSION brings a purge worker to the database (backend_type pg_softfk purge)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
                                   WHERE backend_type = 'pg_softfk launcher' AND datname IS NOT NULL}),
    '0', 'the launcher connects to no database');

# A database created now: the launcher visits it within its round (at most a second), finds
# no extension and leaves it alone. Watch the postmaster log (at DEBUG1) to know the visit
# happened, so that the extension is created after it.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{ALTER SYSTEM SET log_min_messages = debug1; SELECT pg_reload_conf()});
$node->wait_for_log(qr/parameter "log_min_messages" changed to "debug1"/, $log_offset);
$node->safe_psql('postgres', 'CREATE DATABASE lms2');
my $lms2_oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'lms2'});
# The worker started for it exits at once; the postmaster then forgets it.
$node->wait_for_log(qr/unregistering background worker "pg_softfk purge $lms2_oid"/, $log_offset);
$node->safe_psql('postgres', q{ALTER SYSTEM RESET log_min_messages; SELECT pg_reload_conf()});
is($node->safe_psql('postgres', workers_of('lms2')), '0',
    'a database without the extension has no purge worker once the launcher has looked at it');

$node->safe_psql('lms2', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 10);
    CREATE TABLE note (id int PRIMARY KEY, user_id int);
    INSERT INTO note SELECT g, g % 10 + 1 FROM generate_series(1, 50) g;
    SELECT softfk_add('note', 'user_id', 'auth_user');
});
ok($node->poll_query_until('postgres', workers_of('lms2'), '1'),
    'a database where the extension is created later gets a purge worker, with no other setting');
$node->safe_psql('lms2', 'DELETE FROM auth_user WHERE id <= 3');
ok($node->poll_query_until('lms2',
        q{SELECT NOT EXISTS (SELECT FROM note WHERE user_id <= 3)
                 AND NOT EXISTS (SELECT FROM softfk.deletion)}),
    'the later database\'s worker purges its children too');

is($node->safe_psql('postgres', workers_of('plain')), '0',
    'a database without the extension has no purge worker');
is($node->safe_psql('postgres', workers_of('postgres')), '0',
    'nor does the postgres database, which has no extension either');
cmp_ok($node->safe_psql('postgres', workers_of('lms')), '<=', 1,
    'the first database has at most one purge worker');

# ---------------------------------------------------------------------------------------------
# The purge, by the worker alone: a DELETE of users commits and nothing else is done.

my $deleted = 'id BETWEEN 1 AND 100';
my %expected;
for my $t (qw(enrollment profile_link certificate))
{
	$expected{$t} = $node->safe_psql('lms', qq{
	    SELECT count(*) || ':' || coalesce(string_agg(id::text, ',' ORDER BY id), '')
	      FROM $t WHERE user_id IN (SELECT id FROM auth_user WHERE $deleted)});
}
my $survivors = q{
    SELECT md5(string_agg(t || ':' || r, ',' ORDER BY t, r)) FROM (
        SELECT 'e' AS t, e::text AS r FROM enrollment e WHERE user_id > 100
        UNION ALL SELECT 'p', p::text FROM profile_link p WHERE user_id > 100
        UNION ALL SELECT 'c', c::text FROM certificate c WHERE user_id > 100) s};
my $survivors_before = $node->safe_psql('lms', $survivors);
my $certificates_before = $node->safe_psql('lms', q{
    SELECT string_agg(to_jsonb(c)::text, E'\n' ORDER BY id) FROM certificate c WHERE user_id <= 100});

$node->safe_psql('lms', "DELETE FROM auth_user WHERE $deleted");
ok($node->poll_query_until('lms', q{SELECT count(*) FROM softfk.deletion}, '0'),
    'the worker empties the queue after the deleting commit');
ok($node->poll_query_until('lms', q{SELECT count(*) FROM softfk.purge_run WHERE status = 'running'}, '0'),
    'the worker finishes its run');

is($node->safe_psql('lms', 'SELECT count(*) FROM enrollment WHERE user_id <= 100'), '0',
    'the worker purges cascade children after the deleting commit');
my ($n_links) = split /:/, $expected{profile_link};
is($node->safe_psql('lms', q{SELECT count(*) FROM profile_link WHERE user_id IS NULL}), $n_links,
    'the worker nulls the key of set null children');
is($node->safe_psql('lms', q{SELECT count(*) || ':' || string_agg(id::text, ',' ORDER BY id)
                               FROM profile_link WHERE user_id IS NULL}),
    $expected{profile_link}, 'exactly the set null children of the deleted users are nulled, and kept');
is($node->safe_psql('lms', 'SELECT count(*) FROM certificate WHERE user_id <= 100'), '0',
    'the worker moves archive children out of the child table');
is($node->safe_psql('lms', q{
        SELECT count(*) || ':' || string_agg((child_row->>'id'), ',' ORDER BY (child_row->>'id')::int)
          FROM softfk.archived_row
         WHERE child_table = 'certificate'::regclass AND child_column = 'user_id'
           AND parent_table = 'auth_user'::regclass AND key = child_row->>'user_id'}),
    $expected{certificate}, 'softfk.archived_row holds each archived child row once, with its key');
is($node->safe_psql('lms', q{SELECT string_agg(child_row::text, E'\n' ORDER BY (child_row->>'id')::int)
                               FROM softfk.archived_row}),
    $certificates_before, 'an archived row keeps the whole child row as jsonb');
is($node->safe_psql('lms', $survivors), $survivors_before,
    'children of users that still exist are untouched');

my ($n_enrollments) = split /:/, $expected{enrollment};
my ($n_certificates) = split /:/, $expected{certificate};
is($node->safe_psql('lms', q{
        SELECT string_agg(format('%s %s %s %s/%s/%s %s', child, on_delete, pending_keys, rows_deleted,
                                 rows_nulled, rows_archived, last_run_at IS NOT NULL AND last_error IS NULL),
                          E'\n' ORDER BY child::text)
          FROM softfk_status}),
    "certificate archive 0 0/0/$n_certificates t\n"
  . "enrollment cascade 0 $n_enrollments/0/0 t\n"
  . "profile_link set null 0 0/$n_links/0 t",
    'softfk_status shows nothing pending and the totals per reference');
is($node->safe_psql('lms', q{
        SELECT count(*) FILTER (WHERE status = 'completed') > 0 AND bool_and(status = 'completed')
               AND bool_and(started_by = 'worker') AND bool_and(finished_at IS NOT NULL)
               AND bool_and(errors = '[]') AND bool_and(pid > 0)
          FROM softfk_purge_runs}),
    't', 'softfk_purge_runs shows completed worker runs, without errors');
is($node->safe_psql('lms', q{
        SELECT sum(rows_deleted) || '/' || sum(rows_nulled) || '/' || sum(rows_archived)
               || ' ' || (sum(keys_purged) >= 100) FROM softfk_purge_runs}),
    "$n_enrollments/$n_links/$n_certificates true",
    'the worker runs account for every row changed and every key purged');

# ---------------------------------------------------------------------------------------------
# A deleting commit wakes the worker: with a naptime of an hour, the purge still starts at once.

$log_offset = -s $node->logfile;
$node->safe_psql('lms', q{ALTER SYSTEM SET pg_softfk.naptime = '1h'; SELECT pg_reload_conf()});
$node->wait_for_log(qr/parameter "pg_softfk\.naptime" changed to "1h"/, $log_offset);
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 301 AND 305');
ok($node->poll_query_until('lms', q{
        SELECT NOT EXISTS (SELECT FROM softfk.deletion)
           AND NOT EXISTS (SELECT FROM enrollment WHERE user_id BETWEEN 301 AND 305)}),
    'the deleting commit wakes the worker: the purge does not wait for the naptime (1h)');

# ---------------------------------------------------------------------------------------------
# pg_softfk.purge_worker is reloadable: off leaves the queue alone, on drains it. A user
# deleted and re-created (same id) meanwhile keeps its rows.

$node->safe_psql('lms', q{ALTER SYSTEM SET pg_softfk.naptime = '200ms'; SELECT pg_reload_conf()});
$log_offset = -s $node->logfile;
$node->safe_psql('lms', q{ALTER SYSTEM SET pg_softfk.purge_worker = off; SELECT pg_reload_conf()});
# The postmaster logs the new value, then passes SIGHUP on to the workers.
$node->wait_for_log(qr/parameter "pg_softfk\.purge_worker" changed to "off"/, $log_offset);

my $kept_before = $node->safe_psql('lms', q{
    SELECT (SELECT count(*) FROM enrollment WHERE user_id = 150) || '/'
        || (SELECT count(*) FROM profile_link WHERE user_id = 150) || '/'
        || (SELECT count(*) FROM certificate WHERE user_id = 150)});
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 101 AND 120 OR id = 150');
# Asserting that nothing happens: give the worker several naptimes to (not) act.
usleep(1_500_000);
is($node->safe_psql('lms', q{SELECT string_agg(child || ' ' || pending_keys, ',' ORDER BY child::text)
                               FROM softfk_status}),
    'certificate 21,enrollment 21,profile_link 21',
    'with pg_softfk.purge_worker = off the deletion stays queued (softfk_status.pending_keys)');
is($node->safe_psql('lms', q{SELECT count(*) FROM enrollment WHERE user_id BETWEEN 101 AND 120}),
    '60', 'with pg_softfk.purge_worker = off no child row is purged');

# User 150 comes back with the same id before the worker gets to it.
$node->safe_psql('lms', q{INSERT INTO auth_user VALUES (150, 'user150-again')});

$node->safe_psql('lms', q{ALTER SYSTEM SET pg_softfk.purge_worker = on; SELECT pg_reload_conf()});
ok($node->poll_query_until('lms', q{SELECT count(*) FROM softfk.deletion}, '0'),
    'with pg_softfk.purge_worker back on (reload only), the worker drains the queue');
is($node->safe_psql('lms', q{
        SELECT (SELECT count(*) FROM enrollment WHERE user_id BETWEEN 101 AND 120) || '/'
            || (SELECT count(*) FROM profile_link WHERE user_id BETWEEN 101 AND 120) || '/'
            || (SELECT count(*) FROM certificate WHERE user_id BETWEEN 101 AND 120)}),
    '0/0/0', 'the queued children are purged once the worker is back on');
is($node->safe_psql('lms', q{
        SELECT (SELECT count(*) FROM enrollment WHERE user_id = 150) || '/'
            || (SELECT count(*) FROM profile_link WHERE user_id = 150) || '/'
            || (SELECT count(*) FROM certificate WHERE user_id = 150)}),
    $kept_before, 'a user re-created with the same id before the purge keeps all its child rows');
is($node->safe_psql('lms', q{SELECT count(*) FROM softfk.archived_row WHERE key = '150'}), '0',
    'nothing of the re-created user is archived');

# ---------------------------------------------------------------------------------------------
# SIGTERM stops a purge worker; the launcher starts another, which does the work. (A worker
# that would stay for an hour: one that left for lack of work would not need replacing.)

$node->safe_psql('lms', q{ALTER SYSTEM SET pg_softfk.worker_idle_timeout = '1h'; SELECT pg_reload_conf()});
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 250');
ok($node->poll_query_until('lms', q{SELECT count(*) FROM softfk.deletion}, '0'), 'a worker purges');
ok($node->poll_query_until('postgres', workers_of('lms'), '1'), 'and stays connected');
my $old_pid = worker_pid('lms');
like($old_pid, qr/^\d+$/, 'the purge worker of lms has a pid');
is($node->safe_psql('lms', "SELECT pg_terminate_backend($old_pid)"), 't',
    'pg_terminate_backend() signals the purge worker');
ok($node->poll_query_until('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $old_pid", '0'),
    'the terminated purge worker exits');
ok($node->poll_query_until('postgres',
        workers_of('lms') . " AND pid <> $old_pid", '1'),
    'the launcher starts a new purge worker (another pid) for the database');
is($node->safe_psql('postgres', workers_of('lms')), '1', 'there is still exactly one purge worker for lms');
is($node->safe_psql('postgres', $launcher), '1', 'and one launcher');

my $n_later = $node->safe_psql('lms', 'SELECT count(*) FROM certificate WHERE user_id BETWEEN 201 AND 210');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 201 AND 210');
ok($node->poll_query_until('lms', q{
        SELECT (SELECT count(*) FROM softfk.deletion) = 0
           AND NOT EXISTS (SELECT FROM enrollment WHERE user_id BETWEEN 201 AND 210)
           AND NOT EXISTS (SELECT FROM profile_link WHERE user_id BETWEEN 201 AND 210)
           AND NOT EXISTS (SELECT FROM certificate WHERE user_id BETWEEN 201 AND 210)}),
    'the new purge worker purges the next deletion');
is($node->safe_psql('lms', q{SELECT count(*) FROM softfk.archived_row WHERE key::int BETWEEN 201 AND 210}),
    $n_later, 'and archives those children once');

is($node->safe_psql('lms', q{SELECT count(*) FROM softfk_purge_runs WHERE started_by <> 'worker'}), '0',
    'all of this was done by the worker: nobody called softfk_purge()');

# ---------------------------------------------------------------------------------------------
# The worker is a superuser in a database someone else may own: a search_path set for the
# database (ALTER DATABASE ... SET, which its owner may do) that puts functions and operators
# matching the worker's queries better than the built-in ones first must not make the worker
# run them. Each trap records whom it ran as.

$node->safe_psql('lms', 'CREATE SCHEMA trap; GRANT USAGE ON SCHEMA trap TO PUBLIC');
$node->safe_psql('lms', slurp_file(dirname(__FILE__) . '/../fixtures/search_path_traps.sql'));
$node->safe_psql('lms', 'ALTER DATABASE lms SET search_path = trap, public, pg_catalog');
# A worker connecting from now on gets the database's setting.
$old_pid = worker_pid('lms');
$node->safe_psql('lms', "SELECT pg_terminate_backend($old_pid)");
ok($node->poll_query_until('postgres', workers_of('lms') . " AND pid <> $old_pid", '1'),
    'a new purge worker connects to lms after ALTER DATABASE ... SET search_path');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 211 AND 220');
ok($node->poll_query_until('lms', q{
        SELECT (SELECT count(*) FROM softfk.deletion) = 0
           AND NOT EXISTS (SELECT FROM public.enrollment WHERE user_id BETWEEN 211 AND 220)
           AND NOT EXISTS (SELECT FROM public.certificate WHERE user_id BETWEEN 211 AND 220)}),
    'the worker purges under the trapped database search_path');
is($node->safe_psql('lms', q{SELECT count(*) FROM trap.ran_as}), '0',
    'and no function or operator of the database search_path ran: the worker pins its own');

$node->stop;
done_testing();
