# The purge workers and streaming replication: a standby runs no pg_softfk launcher and no
# purge worker (they start once recovery has finished; the standby replays the primary's purge
# instead). Deleted keys the primary queued but did not purge reach the standby through WAL,
# and once the standby is promoted its own worker purges them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
# A worker that stays in its database (013 tests how workers come and go with the work).
$primary->append_conf('postgresql.conf', q{pg_softfk.worker_idle_timeout = '1h'});
$primary->start;

my $processes = q{SELECT coalesce(string_agg(backend_type || ' ' || coalesce(datname, '-'), ',' ORDER BY backend_type), '')
                    FROM pg_stat_activity WHERE backend_type LIKE 'pg_softfk%'};

$primary->safe_psql('postgres', 'CREATE DATABASE lms');
$primary->safe_psql('lms', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 500);
    CREATE TABLE enrollment (id int PRIMARY KEY, user_id int NOT NULL);
    INSERT INTO enrollment SELECT g, g % 500 + 1 FROM generate_series(1, 2000) g;
    CREATE TABLE profile_link (id int PRIMARY KEY, user_id int);
    INSERT INTO profile_link SELECT g, g % 500 + 1 FROM generate_series(1, 1000) g;
    CREATE TABLE certificate (id int PRIMARY KEY, user_id int NOT NULL, grade int);
    INSERT INTO certificate SELECT g, g % 500 + 1, g % 10 FROM generate_series(1, 1000) g;
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
    SELECT softfk_add('profile_link', 'user_id', 'auth_user', on_delete => 'set null');
    SELECT softfk_add('certificate', 'user_id', 'auth_user', on_delete => 'archive');
});
ok($primary->poll_query_until('postgres', $processes, 'pg_softfk launcher -,pg_softfk purge lms'),
    'the primary runs the launcher and a purge worker for lms');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($standby->safe_psql('postgres', 'SHOW shared_preload_libraries'), 'pg_softfk',
    'the standby preloads pg_softfk too');
# Asserting that something does not start: give it the time a primary needs (well under a
# second) several times over.
usleep(1_500_000);
is($standby->safe_psql('postgres', $processes), '',
    'a standby runs no pg_softfk launcher and no purge worker');

# The primary queues deletions but does not purge them (its worker is off).
my $log_offset = -s $primary->logfile;
$primary->safe_psql('lms', q{ALTER SYSTEM SET pg_softfk.purge_worker = off; SELECT pg_reload_conf()});
$primary->wait_for_log(qr/parameter "pg_softfk\.purge_worker" changed to "off"/, $log_offset);

my ($n_enrollments, $n_links, $n_certificates) = split /\|/, $primary->safe_psql('lms', q{
    SELECT (SELECT count(*) FROM enrollment WHERE user_id <= 100) || '|'
        || (SELECT count(*) FROM profile_link WHERE user_id <= 100) || '|'
        || (SELECT count(*) FROM certificate WHERE user_id <= 100)});
my $untouched = q{
    SELECT md5(string_agg(t || r, ',' ORDER BY t, r)) FROM (
        SELECT 'e' AS t, e::text AS r FROM enrollment e WHERE user_id > 100
        UNION ALL SELECT 'p', p::text FROM profile_link p WHERE user_id > 100
        UNION ALL SELECT 'c', c::text FROM certificate c WHERE user_id > 100) s};
my $untouched_before = $primary->safe_psql('lms', $untouched);
my $archived_expected = $primary->safe_psql('lms', q{
    SELECT string_agg(to_jsonb(c)::text, ',' ORDER BY id) FROM certificate c WHERE user_id <= 100});

$primary->safe_psql('lms', 'DELETE FROM auth_user WHERE id <= 100');
$primary->wait_for_catchup($standby);

is($standby->safe_psql('lms', q{SELECT count(*) || ' ' || sum(cardinality(keys)) FROM softfk.deletion}),
    '1 100', 'the queued deletion reaches the standby');
is($standby->safe_psql('lms', 'SELECT count(*) FROM enrollment WHERE user_id <= 100'), $n_enrollments,
    'the standby has the unpurged children');
is($standby->safe_psql('postgres', $processes), '',
    'still no pg_softfk process on the standby with work queued');

# Failover.
$primary->stop;
$standby->promote;
ok($standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'), 'the standby is promoted');
ok($standby->poll_query_until('postgres', $processes, 'pg_softfk launcher -,pg_softfk purge lms'),
    'after promotion the launcher and a purge worker for lms start');
ok($standby->poll_query_until('lms', 'SELECT count(*) FROM softfk.deletion', '0'),
    'the promoted standby\'s worker drains the queue it inherited');
ok($standby->poll_query_until('lms', q{SELECT count(*) FROM softfk.purge_run WHERE status = 'running'}, '0'),
    'and finishes its run');

is($standby->safe_psql('lms', q{
        SELECT (SELECT count(*) FROM enrollment WHERE user_id <= 100) || '/'
            || (SELECT count(*) FROM profile_link WHERE user_id <= 100) || '/'
            || (SELECT count(*) FROM certificate WHERE user_id <= 100)}),
    '0/0/0', 'the children of the deleted users are purged on the promoted standby');
is($standby->safe_psql('lms', 'SELECT count(*) FROM profile_link WHERE user_id IS NULL'), $n_links,
    'set null children are kept with a NULL key');
is($standby->safe_psql('lms', q{SELECT string_agg(child_row::text, ',' ORDER BY (child_row->>'id')::int)
                                  FROM softfk.archived_row}),
    $archived_expected, 'archive children are in softfk.archived_row, once each');
is($standby->safe_psql('lms', $untouched), $untouched_before, 'children of live users are untouched');
is($standby->safe_psql('lms', q{
        SELECT string_agg(child || ' ' || pending_keys || ' ' || rows_deleted || '/' || rows_nulled || '/'
                          || rows_archived, ',' ORDER BY child::text) FROM softfk_status}),
    "certificate 0 0/0/$n_certificates,enrollment 0 $n_enrollments/0/0,profile_link 0 0/$n_links/0",
    'softfk_status on the promoted standby shows the work done and nothing pending');
is($standby->safe_psql('lms', q{
        SELECT count(*) > 0 AND bool_and(status = 'completed' AND started_by = 'worker')
          FROM softfk_purge_runs}),
    't', 'softfk_purge_runs shows the promoted standby\'s completed worker runs');

$standby->stop;
done_testing();
