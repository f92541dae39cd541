# The worker never deadlocks an application that locks the purged tables in another order
# (src/purge/table_locks.rs):
# - a batch locks every child it purges and the parent before it reads a row, so a session
#   that locks one child while the batch runs waits for the batch, and then finds the other
#   children free: no deadlock, whatever order it locks them in (Django's test runner
#   TRUNCATEs every table in one statement at the end of each TransactionTestCase);
# - a child another session holds when a batch starts (the child, or a table a native foreign
#   key to it makes the purge write) gives way: the worker waits for nothing, the other
#   children are purged, the run log says which table, and a later run purges the held child
#   once the lock is gone; when no child is free the whole batch gives way; a child that
#   gives way keeps no lock while the batch goes on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('gives_way');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', qq{autovacuum = off
deadlock_timeout = '200ms'
pg_softfk.lock_timeout = '10s'
pg_softfk.naptime = '200ms'
pg_softfk.worker_idle_timeout = '1h'});
# (A worker's wait for a lock ends at pg_softfk.lock_timeout; a session's check for a deadlock
# comes after deadlock_timeout. Whichever comes first decided, before, whether a deadlock
# failed the application's statement or the worker's batch: here, the application's.)
$node->start;

# Two children, purged in this order (by name); the first one's delete trigger waits
# for advisory lock 42 when the test holds it, so that the batch can be held in its middle.
$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 10);
    CREATE TABLE bookmark (id serial PRIMARY KEY, user_id int NOT NULL);
    CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL);
    INSERT INTO bookmark (user_id) SELECT generate_series(1, 10);
    INSERT INTO enrollment (user_id) SELECT generate_series(1, 10);
    CREATE FUNCTION wait_for_the_test() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(42);
        RETURN OLD;
    END $$;
    -- A table with a native foreign key to a child: the purge's DELETE cascades into it.
    CREATE TABLE bookmark_note (id serial PRIMARY KEY,
                                bookmark_id int REFERENCES bookmark ON DELETE CASCADE);
    INSERT INTO bookmark_note (bookmark_id) SELECT id FROM bookmark;
    CREATE TRIGGER wait_for_the_test BEFORE DELETE ON bookmark
        FOR EACH ROW EXECUTE FUNCTION wait_for_the_test();
    CREATE TRIGGER wait_for_the_test BEFORE DELETE ON enrollment
        FOR EACH ROW EXECUTE FUNCTION wait_for_the_test();
    SELECT softfk_add('bookmark', 'user_id', 'auth_user');
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
});
$node->poll_query_until('postgres', q{
    SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge'})
  or die 'no purge worker';
# What a statement of a background session printed on stderr: '' when it succeeded.
sub error_of
{
	my ($session, $sql) = @_;
	$session->{stderr} = '';
	# (psql ends at an error: ON_ERROR_STOP.)
	eval { $session->query($sql) };
	return $session->{stderr};
}

my $worker_waits_for_the_test = q{
    SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
     WHERE a.backend_type = 'pg_softfk purge' AND l.locktype = 'advisory' AND NOT l.granted};

# ---------------------------------------------------------------------------------------------
# The batch holds its locks from the start: the application waits for it, then goes on.
# (Before, the worker took each child's lock as it reached it: the application got the
# second child at once, the worker then waited for it, and the application's TRUNCATE of the
# first child closed the cycle.)

my $test = $node->background_psql('postgres');
$test->query_safe('SELECT pg_advisory_lock(42)');
$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id = 1');
$node->poll_query_until('postgres', $worker_waits_for_the_test)
  or die 'the batch never reached the first child';

# While the batch is held in the first child, the application locks the second one, then
# truncates the first: the opposite order.
my $app = $node->background_psql('postgres');
my $app_pid = $app->query_safe('SELECT pg_backend_pid()');
$app->query_until(qr/sent/, "\\echo sent\nBEGIN;\nLOCK TABLE enrollment IN ACCESS EXCLUSIVE MODE;\n");
$node->poll_query_until('postgres', qq{
    SELECT wait_event_type = 'Lock' OR state = 'idle in transaction' AND query LIKE 'LOCK%'
      FROM pg_stat_activity WHERE pid = $app_pid})
  or die 'the application did not lock';
$test->query_safe('SELECT pg_advisory_unlock(42)');
$node->poll_query_until('postgres', qq{
    SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = $app_pid})
  or die 'the application never got its lock';
# (Longer than deadlock_timeout: a worker waiting for the second child would have checked for
# a deadlock and found none, leaving the application to find it.)
sleep(1);
is(error_of($app, 'TRUNCATE bookmark, bookmark_note'), '', 'then truncates the first child without a deadlock');
$app->query_safe('ROLLBACK');
ok($node->poll_query_until('postgres', q{
        SELECT (SELECT count(*) FROM bookmark WHERE user_id = 1)
             + (SELECT count(*) FROM enrollment WHERE user_id = 1) = 0}),
    "and the deleted user's rows are purged in both children");

# ---------------------------------------------------------------------------------------------
# A child another session holds gives way; the other child is purged meanwhile.

$app->query_safe('BEGIN');
$app->query_safe('LOCK TABLE enrollment IN SHARE MODE');  # (as CREATE INDEX does)
$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id = 2');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM bookmark WHERE user_id = 2}),
    'the free child is purged while another session holds the other one');
ok($node->poll_query_until('postgres', q{
        SELECT count(*) > 0 FROM softfk_purge_runs
         WHERE errors @> '[{"sqlstate": "55P03", "gave_way": true}]'
           AND errors->0->>'message' = 'the purge gave way to another session''s lock on table public.enrollment'}),
    'the held child gives way, and the run log names the table');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enrollment WHERE user_id = 2}),
    '1', 'its rows wait');
is($node->safe_psql('postgres', q{
        SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE a.backend_type = 'pg_softfk purge' AND NOT l.granted}),
    '0', 'meanwhile the worker waits for no lock');
is($node->safe_psql('postgres', q{SELECT last_error IS NULL FROM softfk_status WHERE child = 'enrollment'::regclass}),
    't', 'giving way is not an error of the reference');
is($node->safe_psql('postgres', q{SELECT waiting_for FROM softfk_status WHERE child = 'enrollment'::regclass}),
    "the ShareLock on enrollment held by PID $app_pid, which the purge gives way to",
    'softfk_status says what the keys wait for, and who holds it');
# The application truncates the other child too while the worker keeps trying: no deadlock.
is(error_of($app, 'TRUNCATE bookmark, bookmark_note'), '',
    'the application locks the other child too, without a deadlock');
$app->query_safe('ROLLBACK');
ok($node->poll_query_until('postgres', q{
        SELECT (SELECT count(*) FROM enrollment WHERE user_id = 2)
             + (SELECT count(*) FROM softfk.deletion) = 0}),
    'once the lock is gone, a later run purges the held child and empties the queue');

# ---------------------------------------------------------------------------------------------
# A table the purge writes through a native foreign key's cascade counts as its child's; when
# every child gives way, the whole batch does.

$app->query_safe('BEGIN');
$app->query_safe('LOCK TABLE bookmark_note, enrollment IN SHARE MODE');
$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id = 3');
ok($node->poll_query_until('postgres', q{
        SELECT count(*) > 0 FROM softfk_purge_runs
         WHERE errors @> '[{"message": "the purge gave way to another session''s lock on table public.bookmark_note"}]'}),
    'a batch gives way to a lock on a table that a foreign key to a child makes it write');
is($node->safe_psql('postgres', q{
        SELECT count(*) FROM bookmark WHERE user_id = 3}),
    '1', 'when no child is free, nothing is purged');
is($node->safe_psql('postgres', q{
        SELECT status FROM softfk_purge_runs WHERE errors @> '[{"sqlstate": "55P03"}]'
         ORDER BY id DESC LIMIT 1}),
    'partial', 'a run that only gave way is partial, not failed');
is(error_of($app, 'TRUNCATE bookmark, enrollment, bookmark_note'), '',
    'and the application goes on without a deadlock');
$app->query_safe('ROLLBACK');
ok($node->poll_query_until('postgres', q{
        SELECT (SELECT count(*) FROM bookmark WHERE user_id = 3)
             + (SELECT count(*) FROM enrollment WHERE user_id = 3)
             + (SELECT count(*) FROM softfk.deletion) = 0}),
    'then the purge goes on');
is($node->safe_psql('postgres', q{SELECT count(*) FROM bookmark}), '7',
    'no row of a live user was touched');
is($node->safe_psql('postgres', q{SELECT count(*) FROM bookmark_note}), '7',
    "and the cascade took the deleted users' notes with their bookmarks");

# ---------------------------------------------------------------------------------------------
# A child that gives way on a table a foreign key to it makes the purge write lets go of the
# child itself: the batch, held in the other child, keeps no lock on it.

$test->query_safe('SELECT pg_advisory_lock(42)');
$app->query_safe('BEGIN');
$app->query_safe('LOCK TABLE bookmark_note IN SHARE MODE');
$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id = 4');
$node->poll_query_until('postgres', $worker_waits_for_the_test)
  or die 'the batch never reached the other child';
is($node->safe_psql('postgres', q{
        SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE a.backend_type = 'pg_softfk purge' AND l.relation = 'bookmark'::regclass}),
    '0', 'the child that gave way is not left locked while the batch goes on');
$test->query_safe('SELECT pg_advisory_unlock(42)');
$app->query_safe('ROLLBACK');
ok($node->poll_query_until('postgres', q{
        SELECT (SELECT count(*) FROM bookmark WHERE user_id = 4)
             + (SELECT count(*) FROM enrollment WHERE user_id = 4)
             + (SELECT count(*) FROM softfk.deletion) = 0}),
    'and both are purged once the lock is gone');

$app->quit;
$test->quit;
$node->stop;
done_testing();
