# Purge workers hold a database only while it has work, from a bounded pool
# (pg_softfk.max_purge_workers):
# - a worker leaves its database once nothing has come for pg_softfk.worker_idle_timeout, and
#   the next deleting commit brings one back;
# - a worker gives way at once to DROP DATABASE and CREATE DATABASE ... TEMPLATE of its
#   database, run by the database's (non-superuser) owner without FORCE; a role that may not
#   run them cannot push it out;
# - 20 databases with the extension, under the default max_worker_processes (8), all get
#   purged, never by more workers than the pool holds, and parallel query still gets its
#   workers;
# - a database whose work waits for a worker says so in softfk_status (for a place in the
#   pool, or for a background worker slot), and waiting databases are served in turn: a
#   worker that has served one for 5 seconds makes room;
# - a template database is never joined.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('pool');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', "autovacuum = off\nmax_prepared_transactions = 2");
$node->start;

my $workers = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge'};
sub workers_in
{
	my ($db) = @_;
	return qq{SELECT count(*) FROM pg_stat_activity
	           WHERE backend_type = 'pg_softfk purge' AND datname = '$db'};
}
sub reload
{
	my ($setting) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $setting; SELECT pg_reload_conf()");
	usleep(300_000);
}
my $schema = q{
    CREATE EXTENSION IF NOT EXISTS pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 100);
    CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL);
    INSERT INTO enrollment (user_id) SELECT g % 100 + 1 FROM generate_series(1, 1000) g;
    CREATE INDEX ON enrollment (user_id);
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
};
sub purged
{
	my ($db, $id) = @_;
	return $node->poll_query_until($db, qq{
	    SELECT NOT EXISTS (SELECT FROM softfk.deletion)
	       AND NOT EXISTS (SELECT FROM enrollment WHERE user_id = $id)});
}

# ---------------------------------------------------------------------------------------------
# A worker comes for the work and leaves when there is none.

$node->safe_psql('postgres', 'CREATE ROLE app LOGIN CREATEDB');
$node->safe_psql('postgres', 'CREATE DATABASE lms OWNER app');
$node->safe_psql('lms', $schema);
$node->safe_psql('lms', 'ALTER TABLE auth_user OWNER TO app; ALTER TABLE enrollment OWNER TO app');

ok($node->poll_query_until('postgres', workers_in('lms'), '0'),
    'a database with the extension and nothing to purge has no worker connected');
is($node->safe_psql('lms', 'SELECT DISTINCT purge_worker FROM softfk_status'), 'not connected',
    'softfk_status says no worker is connected');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 1');
ok(purged('lms', 1), 'a deleting commit brings a worker, which purges');
my $left_at = time();
ok($node->poll_query_until('postgres', workers_in('lms'), '0'),
    'the worker leaves once nothing has come for pg_softfk.worker_idle_timeout (2 s)');
cmp_ok(time() - $left_at, '<', 4.5, 'it left well within the 5 s DROP DATABASE waits for');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 2');
ok(purged('lms', 2), 'the next deleting commit brings a worker back');

# A prepared transaction's deletion is announced by its COMMIT PREPARED.
ok($node->poll_query_until('postgres', workers_in('lms'), '0'), 'the worker has left again');
$node->safe_psql('lms', q{BEGIN; DELETE FROM auth_user WHERE id = 8; PREPARE TRANSACTION 'retire8'});
usleep(2_500_000);
is($node->safe_psql('postgres', workers_in('lms')), '0', 'PREPARE TRANSACTION brings no worker');
my $committed_at = time();
$node->safe_psql('lms', q{COMMIT PREPARED 'retire8'});
ok(purged('lms', 8), 'COMMIT PREPARED in its database brings a worker, which purges');
cmp_ok(time() - $committed_at, '<', 5, 'at once, not at the next look at idle databases (a minute)');

# ---------------------------------------------------------------------------------------------
# Giving way: a worker that would stay for an hour leaves for DROP DATABASE and CREATE
# DATABASE ... TEMPLATE of its database, run by its non-superuser owner, without FORCE.

reload(q{pg_softfk.worker_idle_timeout = '1h'});
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 3');
ok(purged('lms', 3), 'purged');
ok($node->poll_query_until('postgres', workers_in('lms'), '1'),
    'with an idle timeout of an hour the worker stays connected');
my $pid = $node->safe_psql('postgres',
    q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'lms'});

$node->safe_psql('postgres', 'CREATE ROLE stranger LOGIN CREATEDB');
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE lms', extra_params => [ '-U', 'stranger' ]);
like($err, qr/must be owner of database lms/, 'a role that does not own the database cannot drop it');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid"), '1',
    '... nor push the worker out by trying');

my $started = time();
($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE lms_copy TEMPLATE lms',
    extra_params => [ '-U', 'app' ]);
is($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database with a connected worker succeeds, for its owner')
  or diag($err);
cmp_ok(time() - $started, '<', 4, 'without waiting for the worker');
is($node->safe_psql('lms_copy', 'SELECT count(*) FROM enrollment WHERE user_id <= 3'), '0',
    'the copy has the purged data');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid"), '0',
    'the worker was sent away');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 4');
ok(purged('lms', 4), 'a worker serves the database again afterwards');

$node->safe_psql('lms_copy', 'DELETE FROM auth_user WHERE id = 5');
ok(purged('lms_copy', 5), 'and the copy gets a worker of its own');
ok($node->poll_query_until('postgres', workers_in('lms_copy'), '1'), 'which stays (idle timeout 1h)');
$started = time();
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE lms_copy', extra_params => [ '-U', 'app' ]);
is($ret, 0, 'DROP DATABASE (no FORCE) of a database with a connected worker succeeds, for its owner')
  or diag($err);
cmp_ok(time() - $started, '<', 4, 'without waiting for the worker');
($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE plain_copy TEMPLATE DEFAULT');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE DEFAULT still works') or diag($err);
reload(q{pg_softfk.worker_idle_timeout = '2s'});

# ---------------------------------------------------------------------------------------------
# Twenty databases under the default max_worker_processes (8): all purged, by at most
# max_purge_workers (2) workers at a time, and parallel query still gets workers.

$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->safe_psql('tmpl', $schema);
my @dbs = map { "db$_" } 1 .. 20;
$node->safe_psql('postgres', "CREATE DATABASE $_ TEMPLATE tmpl") for @dbs;
$node->safe_psql('postgres', q{
    CREATE TABLE big AS SELECT g AS n FROM generate_series(1, 300000) g; ANALYZE big});
is($node->safe_psql('postgres', 'SHOW max_worker_processes'), '8', 'max_worker_processes is the default, 8');

$node->safe_psql($_, 'DELETE FROM auth_user WHERE id BETWEEN 1 AND 10') for @dbs;
my $most = 0;
my $parallel = '';
my $deadline = time() + 60;
while (time() < $deadline)
{
	my $n = $node->safe_psql('postgres', $workers);
	$most = $n if $n > $most;
	if ($parallel eq '')
	{
		$parallel = $node->safe_psql('postgres', q{
		    SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0;
		    SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
		    EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(*) FROM big});
	}
	my $left = 0;
	for my $db (@dbs)
	{
		$left += $node->safe_psql($db, q{SELECT count(*) FROM enrollment WHERE user_id <= 10});
	}
	last if $left == 0;
	usleep(100_000);
}
is(join(',', map { $node->safe_psql($_, q{SELECT count(*) FROM enrollment WHERE user_id <= 10}) } @dbs),
    join(',', ('0') x 20), 'every one of the 20 databases is purged');
cmp_ok($most, '<=', 2, 'never more purge workers at once than pg_softfk.max_purge_workers (2)');
like($parallel, qr/Workers Launched: 2/, 'a parallel query meanwhile gets the workers it plans');

# ---------------------------------------------------------------------------------------------
# Waiting, and served in turn. One place in the pool; a transaction holding an id keeps every
# final pass waiting (the cluster-wide horizon), so a served database keeps its worker: the
# other database waits, says so, and gets the worker within the fair share.

reload('pg_softfk.max_purge_workers = 1');
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; SELECT pg_current_xact_id()');
$node->safe_psql('db1', 'DELETE FROM auth_user WHERE id = 50');
ok($node->poll_query_until('postgres', workers_in('db1'), '1'), 'db1 gets the one worker');
$node->safe_psql('db2', 'DELETE FROM auth_user WHERE id = 50');
ok($node->poll_query_until('db2', q{SELECT DISTINCT purge_worker FROM softfk_status},
        'waiting for a purge worker'),
    'db2 waits, and softfk_status says so');
is($node->safe_psql('db2', q{SELECT bool_and(purge_worker_since <= now()) FROM softfk_status}), 't',
    'with the time it started waiting');
ok($node->poll_query_until('db2', q{SELECT count(*) FROM enrollment WHERE user_id = 50}, '0'),
    'within the fair share (5 s), db1\'s worker makes room and db2 gets its first pass');
$holder->query_safe('COMMIT');
$holder->quit;
ok(purged('db1', 50) && purged('db2', 50), 'once the horizon passes, both finish');
reload('pg_softfk.max_purge_workers = 2');

# ---------------------------------------------------------------------------------------------
# A template database is never joined (a worker there would make CREATE DATABASE from it wait).

$node->safe_psql('postgres', 'ALTER DATABASE tmpl IS_TEMPLATE true');
$node->safe_psql('tmpl', 'DELETE FROM auth_user WHERE id = 70');
usleep(2_500_000);
is($node->safe_psql('postgres', workers_in('tmpl')), '0', 'a template database is never joined');
is($node->safe_psql('tmpl', 'SELECT count(*) FROM softfk.deletion'), '1', 'its deletion stays queued');

# ---------------------------------------------------------------------------------------------
# No background worker slot at all: the database says so, and is served once there is one.

$node->append_conf('postgresql.conf', 'max_worker_processes = 2');   # the launcher and logical replication's
$node->restart;
$node->safe_psql('db3', 'DELETE FROM auth_user WHERE id = 60');
ok($node->poll_query_until('db3', q{SELECT DISTINCT purge_worker FROM softfk_status},
        'waiting for a background worker slot (max_worker_processes)'),
    'with no free background worker slot, softfk_status says what the work waits for');
$node->append_conf('postgresql.conf', 'max_worker_processes = 8');
$node->restart;
ok(purged('db3', 60), 'after a restart with room, the queued work is purged');

$node->stop;
done_testing();
