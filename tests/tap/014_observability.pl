# What an operator sees of the purge:
# - softfk_status gives, per reference, the recent pace (keys and rows per second of run
#   time), the estimated time to drain what is pending, and why the oldest pending key waits:
#   its final pass held back by a transaction that began before the deletion, named by the
#   pid (idle in transaction) or the gid (a forgotten prepared transaction) — the lag grows
#   meanwhile, and the keys drain once it ends;
# - a child row held FOR UPDATE blocks only its own key, not the others of its queue row;
# - the worker's pg_stat_activity row names the child and the batch it is purging.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('observe');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', "autovacuum = off\nmax_prepared_transactions = 2");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE lms');
$node->safe_psql('lms', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 100);
    CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL);
    INSERT INTO enrollment (user_id) SELECT g % 100 + 1 FROM generate_series(1, 2000) g;
    CREATE INDEX ON enrollment (user_id);
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
});
my $status = q{SELECT pending_keys, oldest_pending_age IS NOT NULL, waiting_for FROM softfk_status};
my $drained = q{SELECT count(*) FROM softfk.deletion};

# ---------------------------------------------------------------------------------------------
# The pace of recent runs.

$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id <= 20');
ok($node->poll_query_until('lms', $drained, '0'), 'the worker purges 20 users');
is($node->safe_psql('lms', q{
        SELECT keys_per_second > 0, rows_per_second > 0, estimated_drain IS NULL, waiting_for IS NULL
          FROM softfk_status}),
    't|t|t|t',
    'softfk_status shows the recent pace in keys and rows per second; nothing pending, nothing waits');

# ---------------------------------------------------------------------------------------------
# A session idle in transaction, holding a transaction id, in another database.

my $idle = $node->background_psql('postgres');
$idle->query_safe('BEGIN');
my $idle_pid = $idle->query_safe('SELECT pg_backend_pid()');
$idle->query_safe('SELECT pg_current_xact_id()');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 30');
ok($node->poll_query_until('lms', 'SELECT count(*) FROM enrollment WHERE user_id = 30', '0'),
    'the first pass purges the rows at once');
ok($node->poll_query_until('lms', q{SELECT waiting_for FROM softfk_status},
        "its final pass, for the transaction of pid $idle_pid (database postgres, idle in transaction since "
          . $node->safe_psql('postgres', "SELECT to_char(xact_start, 'YYYY-MM-DD HH24:MI:SS TZ') FROM pg_stat_activity WHERE pid = $idle_pid")
          . "), which began before the deletion"),
    'softfk_status says the key waits for its final pass, for the idle-in-transaction session, by pid');
sleep(1);
is($node->safe_psql('lms', q{SELECT pending_keys, oldest_pending_age >= interval '1 second' FROM softfk_status}),
    '1|t', 'the key stays pending and its lag grows');
$idle->query_safe('COMMIT');
ok($node->poll_query_until('lms', $drained, '0'), 'once the session ends its transaction, the key drains');
is($node->safe_psql('lms', $status), '0|f|', 'and nothing waits');

# ---------------------------------------------------------------------------------------------
# A forgotten prepared transaction.

$node->safe_psql('postgres', q{BEGIN; SELECT pg_current_xact_id(); PREPARE TRANSACTION 'forgotten'});
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 31');
ok($node->poll_query_until('lms', q{SELECT waiting_for LIKE 'its final pass, for the prepared transaction ''forgotten'' (database postgres, prepared at %' FROM softfk_status}, 't'),
    'softfk_status names the prepared transaction that holds the final pass back, by its gid');
$node->safe_psql('postgres', q{COMMIT PREPARED 'forgotten'});
ok($node->poll_query_until('lms', $drained, '0'), 'once it is committed, the key drains');

# ---------------------------------------------------------------------------------------------
# A child row held FOR UPDATE holds back only itself: the other keys of the same queue row,
# and the key's other rows, are purged at once (the first pass skips locked rows), and
# softfk_status names the holder.

my $locker = $node->background_psql('lms');
$locker->query_safe('BEGIN');
my $locker_pid = $locker->query_safe('SELECT pg_backend_pid()');
$locker->query_safe('SELECT * FROM enrollment WHERE user_id = 55 LIMIT 1 FOR UPDATE');
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 50 AND 59');
is($node->safe_psql('lms', 'SELECT count(*) FROM softfk.deletion'), '1', 'ten users deleted in one statement: one queue row');
ok($node->poll_query_until('lms', q{
        SELECT count(*) FROM enrollment WHERE user_id BETWEEN 50 AND 59 AND user_id <> 55}, '0'),
    'the other nine users\' rows are purged at once');
ok($node->poll_query_until('lms', 'SELECT count(*) FROM enrollment WHERE user_id = 55', '1'),
    'and user 55\'s unlocked rows');
is($node->safe_psql('lms', 'SELECT count(*) FROM enrollment WHERE user_id = 55'), '1',
    'of user 55, only the locked row is left');
ok($node->poll_query_until('lms', qq{SELECT waiting_for LIKE 'its final pass, for the transaction of pid $locker_pid %' FROM softfk_status
                                      WHERE child = 'enrollment'::regclass}, 't'),
    'softfk_status names the session holding the lock (its transaction holds the final pass back)');
$locker->query_safe('COMMIT');
$locker->quit;
$idle->quit;
ok($node->poll_query_until('lms', $drained, '0'), 'once it commits, the final pass purges user 55 too');
is($node->safe_psql('lms', 'SELECT count(*) FROM enrollment WHERE user_id = 55'), '0', 'none of its rows is left');

# ---------------------------------------------------------------------------------------------
# The worker's pg_stat_activity row names what it is purging.

$node->safe_psql('lms', q{
    CREATE TABLE slow_child (id serial PRIMARY KEY, user_id int);
    INSERT INTO slow_child (user_id) SELECT 40 FROM generate_series(1, 10);
    CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.3); RETURN OLD; END $$;
    CREATE TRIGGER slowly BEFORE DELETE ON slow_child FOR EACH ROW EXECUTE FUNCTION slowly();
    SELECT softfk_add('slow_child', 'user_id', 'auth_user');
});
$node->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 40');
my $queue_row = $node->safe_psql('lms', 'SELECT max(id) FROM softfk.deletion');
ok($node->poll_query_until('postgres', qq{
        SELECT query ~ '^pg_softfk purge: public\\.slow_child\\(user_id\\) -> public\\.auth_user: 1 key of queue row $queue_row, (first|final) pass\$'
          FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'lms'}, 't'),
    'the worker\'s pg_stat_activity row names the child, the parent, the batch and the pass');
ok($node->poll_query_until('lms', $drained, '0'), 'and it finishes');

$node->stop;
done_testing();
