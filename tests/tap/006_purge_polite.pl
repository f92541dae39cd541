# The worker is polite and thorough:
# - rows a user transaction holds locked are skipped by the first pass and waited for (up to
#   pg_softfk.lock_timeout) by the final pass; a batch that times out is rolled back, retried
#   with half its keys, logged when even one key times out, and purged by a later run once
#   the lock is gone;
# - the periodic sweep (pg_softfk.sweep_interval) purges orphans the capture never saw.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('polite');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
# A worker that stays in its database (013 tests how workers come and go with the work).
$node->append_conf('postgresql.conf', q{pg_softfk.worker_idle_timeout = '1h'});
$node->append_conf('postgresql.conf', qq{
pg_softfk.naptime = '200ms'
pg_softfk.lock_timeout = '200ms'
autovacuum = off
});
$node->start;

$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 10);
    CREATE TABLE enrollment (id int PRIMARY KEY, user_id int NOT NULL);
    INSERT INTO enrollment SELECT g, 1 + g % 10 FROM generate_series(1, 100) g;
    CREATE INDEX ON enrollment (user_id);
    SELECT softfk_add('enrollment', 'user_id', 'auth_user', validate => 'off');
});
$node->poll_query_until('postgres', q{
    SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge'})
  or die 'no purge worker';

# A user transaction (first) holds one enrollment of user 2 (id 11) locked while users 1 and 2
# are deleted in one statement.
my $first = $node->background_psql('postgres');
$first->query_safe('BEGIN');
$first->query_safe('SELECT * FROM enrollment WHERE id = 11 FOR UPDATE');
$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id IN (1, 2)');

$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM enrollment WHERE user_id IN (1, 2)})
  or die 'the unlocked rows were not purged';
is($node->safe_psql('postgres', q{SELECT id FROM enrollment WHERE user_id IN (1, 2)}), '11',
    'the first pass purges every row of the deleted users except the one a transaction holds locked (SKIP LOCKED)');
is($node->safe_psql('postgres', q{SELECT cardinality(keys) || ' ' || final_pass FROM softfk.deletion}),
    '2 true', 'the keys stay queued for their final pass');

# The final pass waits for the first transaction to end (it was running at the delete). Before
# it runs, a second transaction takes the row's lock over: the final pass must wait for it.
$node->safe_psql('postgres', q{
    ALTER SYSTEM SET pg_softfk.purge_worker = off;
    SELECT pg_reload_conf();
});
my $second = $node->background_psql('postgres');
$second->query_safe('BEGIN');
my $second_pid = $second->query_safe('SELECT pg_backend_pid()');
$second->query_until(qr/waiting/, "\\echo waiting\nSELECT * FROM enrollment WHERE id = 11 FOR UPDATE;\n");
$first->query_safe('COMMIT');
$first->quit;
$node->poll_query_until('postgres', qq{
    SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = $second_pid})
  or die 'the second transaction did not get the lock';
$node->safe_psql('postgres', q{
    ALTER SYSTEM SET pg_softfk.purge_worker = on;
    SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres', q{
        SELECT count(*) > 0 FROM softfk_purge_runs
         WHERE errors @> '[{"sqlstate": "55P03", "keys": 1}]'}),
    'the final pass waits pg_softfk.lock_timeout for the locked row, then rolls its batch back and logs lock_not_available');
is($node->safe_psql('postgres', q{
        SELECT status, batches, keys_purged FROM softfk_purge_runs
         WHERE errors @> '[{"sqlstate": "55P03"}]' ORDER BY id LIMIT 1}),
    'partial|1|1',
    'the timed-out batch of two keys is retried with one: the key without a locked row is finished, the run is partial');
is($node->safe_psql('postgres', q{SELECT keys_done || ' of ' || cardinality(keys) FROM softfk.deletion}),
    '1 of 2', 'the queue records the finished key');
like($node->safe_psql('postgres', q{SELECT last_error FROM softfk_status}),
    qr/lock/, 'softfk_status shows the last error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrollment WHERE id = 11}), '1',
    'the locked row is still there and its key still queued')
  and is($node->safe_psql('postgres', q{SELECT count(*) FROM softfk.deletion}), '1', 'queue still holds the key');

$second->query_safe('COMMIT');
$second->quit;
ok($node->poll_query_until('postgres', q{
        SELECT NOT EXISTS (SELECT FROM enrollment WHERE user_id IN (1, 2))
           AND NOT EXISTS (SELECT FROM softfk.deletion)}),
    'once the lock is released a later run purges the row and empties the queue');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrollment}), '80',
    'no row of a live user was touched');

# Orphans the capture never saw: rows written with validation off for users that never
# existed. Without a sweep they stay; with pg_softfk.sweep_interval they are purged.
$node->safe_psql('postgres', q{INSERT INTO enrollment VALUES (1001, 404), (1002, 405)});
is($node->safe_psql('postgres', q{SELECT orphan_rows FROM orphan_report()}), '2',
    'rows referencing users that never existed are orphans the capture cannot see');
$node->safe_psql('postgres', q{
    ALTER SYSTEM SET pg_softfk.sweep_interval = '1s';
    SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres', q{SELECT orphan_rows = 0 FROM orphan_report()}),
    'the periodic sweep purges them');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrollment}), '80',
    'the sweep touches only orphans');

# An idle worker polls every naptime without a transaction id: no WAL, no xid consumption.
$node->safe_psql('postgres', q{
    ALTER SYSTEM RESET pg_softfk.sweep_interval;
    SELECT pg_reload_conf();
});
sleep(1);
my $before = $node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())');
sleep(2);
is($node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())'), $before,
    'ten idle polls of the worker consume no transaction id');

$node->stop;
done_testing();
