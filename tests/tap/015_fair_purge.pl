# A user who owns millions of rows (a bot account) does not hold back the others' purges:
# - its rows are purged pg_softfk.rows_per_statement at a time, one statement per child and
#   batch, and between its batches it goes to the back of the queue, so that users deleted
#   after it are purged within seconds while it drains;
# - this holds in a first pass (other transactions running: rows locked by them skipped) and
#   in a final pass, whether the key is known to be big from the column's statistics (a
#   quiet machine, where the first pass is the final one) or from its own first pass;
# - every row is purged once: the totals are exactly the rows there were; the bot's key moves
#   from queue row to queue row, never held by two at once;
# - pg_softfk.batch_delay paces the worker: the same drain takes longer with a pause after
#   each batch;
# - a big key nothing knows is big (no statistics, a quiet machine) makes one unbounded
#   statement, which hits the worker's statement_timeout; the batch is retried bounded;
# - a 'set null' child whose trigger keeps the key fails with "makes no progress" instead of
#   coming back to the same rows for ever.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('fair');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', qq{autovacuum = off
pg_softfk.rows_per_statement = 1000
pg_softfk.batch_delay = '50ms'
pg_softfk.worker_idle_timeout = '1h'});
$node->start;

my $bot_rows = 100_000;
$node->safe_psql('postgres', qq{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    CREATE TABLE enrollment (id bigserial PRIMARY KEY, user_id int NOT NULL);
    CREATE INDEX ON enrollment (user_id);
    CREATE TABLE progress (id bigserial PRIMARY KEY, user_id int);
    CREATE INDEX ON progress (user_id);
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
    SELECT softfk_add('progress', 'user_id', 'auth_user', on_delete => 'set null');
    CREATE FUNCTION fill(bot int, users int[]) RETURNS void LANGUAGE sql AS \$\$
        INSERT INTO auth_user SELECT unnest(bot || users);
        INSERT INTO enrollment (user_id) SELECT bot FROM generate_series(1, $bot_rows);
        INSERT INTO progress (user_id) SELECT bot FROM generate_series(1, $bot_rows / 2);
        INSERT INTO enrollment (user_id) SELECT u FROM unnest(users) u, generate_series(1, 10);
        INSERT INTO progress (user_id) SELECT u FROM unnest(users) u, generate_series(1, 5);
    \$\$;
});
# (A run records its batches when it ends, just after its last one.)
my $drained = q{SELECT (SELECT count(*) FROM softfk.deletion)
                     + (SELECT count(*) FROM softfk.purge_run WHERE status = 'running')};
my $totals = q{SELECT sum(rows_deleted), sum(rows_nulled) FROM softfk.purge_total};

# Delete the bot, then, one statement each, 20 users; return how long the users took to be
# purged, and the bot's rows left at that moment.
sub bot_then_users
{
	my ($bot, $first_user) = @_;
	my $users = join(',', $first_user .. $first_user + 19);
	$node->safe_psql('postgres', "DELETE FROM auth_user WHERE id = $bot");
	my $start = time;
	$node->safe_psql('postgres', "DELETE FROM auth_user WHERE id = $_") for ($first_user .. $first_user + 19);
	$node->poll_query_until('postgres', qq{
        SELECT count(*) FROM (SELECT FROM enrollment WHERE user_id IN ($users)
                              UNION ALL SELECT FROM progress WHERE user_id IN ($users)) r}, '0')
	  or die 'the users were never purged';
	my $took = time - $start;
	my $bot_left = $node->safe_psql('postgres', "SELECT count(*) FROM enrollment WHERE user_id = $bot");
	return ($took, $bot_left);
}

# ---------------------------------------------------------------------------------------------
# A quiet machine: the bot's first pass is its final one, bounded because the statistics
# know the key is big.

$node->safe_psql('postgres', q{SELECT fill(1, ARRAY(SELECT generate_series(2, 21))); ANALYZE});
my ($took, $bot_left) = bot_then_users(1, 2);
cmp_ok($took, '<', 5, "users deleted after the bot are purged within 5 s (took ${took}s)");
cmp_ok($bot_left, '>', 1000, "while the bot's rows still drain ($bot_left left)");
ok($node->poll_query_until('postgres', $drained, '0'), 'then the bot drains');
is($node->safe_psql('postgres', $totals), ($bot_rows + 200) . '|' . ($bot_rows / 2 + 100),
    'every row was purged exactly once');
cmp_ok($node->safe_psql('postgres', 'SELECT sum(batches) FROM softfk.purge_run'), '>=', $bot_rows / 1000,
    'in batches of at most rows_per_statement rows of the bot per child');
my $first_drain = $node->safe_psql('postgres', q{
    SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM softfk.purge_run});

# ---------------------------------------------------------------------------------------------
# A busy machine (a transaction with an id is running): the bot's first pass skips nothing it
# should not and is bounded; its final pass, after that transaction, is bounded because its
# first pass found it big. No statistics this time.

$node->safe_psql('postgres', q{TRUNCATE softfk.purge_run, softfk.purge_total});
$node->safe_psql('postgres', q{SELECT fill(100, ARRAY(SELECT generate_series(101, 120)))});
my $busy = $node->background_psql('postgres');
$busy->query_safe('BEGIN');
$busy->query_safe('SELECT pg_current_xact_id()');
# A row of the bot held FOR UPDATE: the first pass leaves it to the final pass.
$busy->query_safe('SELECT * FROM enrollment WHERE user_id = 100 ORDER BY id LIMIT 1 FOR UPDATE');
($took, $bot_left) = bot_then_users(100, 101);
cmp_ok($took, '<', 5, "with a transaction running, users deleted after the bot are purged within 5 s (took ${took}s)");
cmp_ok($bot_left, '>', 1000, "while the bot's rows still drain ($bot_left left)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM softfk.deletion WHERE '100' = ANY (keys)}), '1',
    "one queue row holds the bot's key: it moved, not copied");
ok($node->poll_query_until('postgres', q{SELECT count(*) FROM enrollment WHERE user_id = 100}, '1'),
    'the first pass purges every row of the bot but the one held');
$busy->query_safe('COMMIT');
$busy->quit;
ok($node->poll_query_until('postgres', $drained, '0'), 'once the transaction ends, the final pass purges it');
is($node->safe_psql('postgres', $totals), ($bot_rows + 200) . '|' . ($bot_rows / 2 + 100),
    'every row was purged exactly once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM orphan_report() WHERE orphan_rows > 0'), '0',
    'no orphan is left');

# ---------------------------------------------------------------------------------------------
# pg_softfk.batch_delay: the same drain with no pause is faster.

$node->safe_psql('postgres', q{TRUNCATE softfk.purge_run, softfk.purge_total});
$node->append_conf('postgresql.conf', "pg_softfk.batch_delay = 0");
$node->reload;
$node->safe_psql('postgres', q{SELECT fill(200, ARRAY(SELECT generate_series(201, 220))); ANALYZE});
bot_then_users(200, 201);
ok($node->poll_query_until('postgres', $drained, '0'), 'without a pause, the bot drains');
my $fast_drain = $node->safe_psql('postgres', q{
    SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM softfk.purge_run});
cmp_ok($fast_drain, '<', $first_drain,
    "batch_delay = 50ms made the drain slower ($first_drain s) than batch_delay = 0 ($fast_drain s)");

# ---------------------------------------------------------------------------------------------
# A big key the statistics do not know (they were taken before it grew), on a quiet machine:
# its first pass is final and unbounded, and hits the statement timeout; retried bounded.

$node->safe_psql('postgres', q{TRUNCATE softfk.purge_run, softfk.purge_total});
$node->append_conf('postgresql.conf', "pg_softfk.statement_timeout = '50ms'");
$node->reload;
$node->safe_psql('postgres', q{SELECT fill(300, ARRAY(SELECT generate_series(301, 320)))});
($took, $bot_left) = bot_then_users(300, 301);
cmp_ok($took, '<', 5, "users deleted after an unknown big key are purged within 5 s (took ${took}s)");
ok($node->poll_query_until('postgres', $drained, '0'), 'the unknown big key drains');
cmp_ok($node->safe_psql('postgres', 'SELECT sum(batches) FROM softfk.purge_run'), '>=', $bot_rows / 1000,
    'bounded after its one statement that timed out');
is($node->safe_psql('postgres', $totals), ($bot_rows + 200) . '|' . ($bot_rows / 2 + 100),
    'every row was purged exactly once');
$node->append_conf('postgresql.conf', "pg_softfk.statement_timeout = '1min'");
$node->reload;

# ---------------------------------------------------------------------------------------------
# A 'set null' child whose trigger keeps the key.

$node->safe_psql('postgres', q{
    CREATE TABLE badge (id bigserial PRIMARY KEY, user_id int);
    CREATE FUNCTION keep_user() RETURNS trigger LANGUAGE plpgsql AS
        'BEGIN NEW.user_id := OLD.user_id; RETURN NEW; END';
    CREATE TRIGGER keep_user BEFORE UPDATE ON badge FOR EACH ROW EXECUTE FUNCTION keep_user();
    INSERT INTO auth_user VALUES (400);
    INSERT INTO badge (user_id) SELECT 400 FROM generate_series(1, 3000);
    SELECT softfk_add('badge', 'user_id', 'auth_user', on_delete => 'set null');
    DELETE FROM auth_user WHERE id = 400;
});
ok($node->poll_query_until('postgres', q{
        SELECT last_error LIKE 'purging public.badge makes no progress: its orphan rows keep their keys%'
          FROM softfk_status WHERE child = 'badge'::regclass}),
    'a trigger that keeps the key makes the purge fail with "makes no progress"');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM softfk.deletion'), '<=', 2,
    'and the queue does not grow');
is($node->safe_psql('postgres', 'SELECT count(*) FROM badge WHERE user_id = 400'), '3000',
    'the rows keep their key (the trigger says so)');

$node->stop;
done_testing();
