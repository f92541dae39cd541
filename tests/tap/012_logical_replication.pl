# A publisher and a subscriber with FOR ALL TABLES, which publishes pg_softfk's own tables
# too (PostgreSQL 15 cannot leave them out). The subscriber receives the publisher's purge as
# replicated changes — queue rows come and go, child rows are deleted, run-log and archive
# rows arrive — and its own worker purges nothing: its own writes to those tables would
# collide with the replicated ids and stop the subscription. softfk_purge() is refused there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $schema = q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    CREATE TABLE enrollment (id int PRIMARY KEY, user_id int);
    CREATE TABLE certificate (id int PRIMARY KEY, user_id int);
};

my $publisher = PostgreSQL::Test::Cluster->new('publisher');
$publisher->init(allows_streaming => 'logical');
$publisher->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$publisher->append_conf('postgresql.conf', 'pg_softfk.naptime = 100ms');
# Off at first, so that the deletions wait in the queue, replicated, for a while.
$publisher->append_conf('postgresql.conf', 'pg_softfk.purge_worker = off');
$publisher->start;
my $subscriber = PostgreSQL::Test::Cluster->new('subscriber');
$subscriber->init;
$subscriber->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$subscriber->append_conf('postgresql.conf', 'pg_softfk.naptime = 100ms');
$subscriber->start;

$publisher->safe_psql('postgres', $schema . q{
    INSERT INTO auth_user SELECT generate_series(1, 20);
    INSERT INTO enrollment SELECT g, g FROM generate_series(1, 20) g;
    INSERT INTO certificate SELECT g, g FROM generate_series(1, 20) g;
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
    SELECT softfk_add('certificate', 'user_id', 'auth_user', on_delete => 'archive');
    CREATE PUBLICATION everything FOR ALL TABLES;
});
$subscriber->safe_psql('postgres', $schema);
my $connstr = $publisher->connstr . ' dbname=postgres';
$subscriber->safe_psql('postgres', "CREATE SUBSCRIPTION everything CONNECTION '$connstr' PUBLICATION everything");
$subscriber->wait_for_subscription_sync($publisher, 'everything');
is($subscriber->safe_psql('postgres', 'SELECT count(*) FROM softfk.reference'), '2',
    'the registrations arrive with the initial copy');

# Users deleted on the publisher, in several transactions: its worker purges, and each
# purge's changes (queue rows, child deletes, archive and run-log rows) are replicated.
$publisher->safe_psql('postgres', "DELETE FROM auth_user WHERE id = $_") for 1 .. 5;
$publisher->safe_psql('postgres', 'DELETE FROM auth_user WHERE id BETWEEN 6 AND 10');
$publisher->wait_for_catchup('everything');
# The subscriber's worker polls every 100 ms: give it ten chances at the replicated queue.
sleep 1;
is($subscriber->safe_psql('postgres', q{SELECT sum(cardinality(keys)) FROM softfk.deletion}), '10',
    'the subscriber\'s worker leaves the replicated queue alone');
is($subscriber->safe_psql('postgres', q{SELECT count(*) FROM enrollment WHERE user_id <= 10}), '10',
    'and purges none of its children itself');
$publisher->safe_psql('postgres', 'ALTER SYSTEM SET pg_softfk.purge_worker = on');
$publisher->reload;
ok($publisher->poll_query_until('postgres', q{
        SELECT NOT EXISTS (SELECT FROM softfk.deletion)
           AND NOT EXISTS (SELECT FROM enrollment WHERE user_id <= 10)}),
    'the publisher purges the children of its deleted users');
$publisher->wait_for_catchup('everything');
# Something replicated after the purge: it arrives only if the subscription still runs.
$publisher->safe_psql('postgres', 'INSERT INTO auth_user VALUES (100)');
$publisher->wait_for_catchup('everything');
is($subscriber->safe_psql('postgres', 'SELECT count(*) FROM auth_user WHERE id = 100'), '1',
    'the subscription keeps streaming');
is($subscriber->safe_psql('postgres', q{SELECT count(*) FROM enrollment WHERE user_id <= 10}), '0',
    'the subscriber\'s children are gone, deleted by the replicated purge');
is($subscriber->safe_psql('postgres', q{SELECT count(*) FROM softfk.archived_row}), '10',
    'the archive arrives once');
is($subscriber->safe_psql('postgres', q{SELECT count(*) FROM softfk.deletion}), '0',
    'the replicated queue is empty, as on the publisher');
is($subscriber->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM softfk.purge_run}),
    $publisher->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM softfk.purge_run}),
    'the run log is the publisher\'s: the subscriber ran no purge of its own');
my ($ret, $out, $err) = $subscriber->psql('postgres', 'SELECT * FROM softfk_purge()');
like($err, qr/does not run in a database that subscribes/, 'softfk_purge() is refused on the subscriber');
ok($subscriber->poll_query_until('postgres', q{SELECT count(*) FROM pg_stat_activity
                                                WHERE backend_type = 'pg_softfk purge'}, '0'),
    'no purge worker stays on the subscriber: there is nothing for it to do');

$subscriber->stop;
$publisher->stop;
done_testing();
