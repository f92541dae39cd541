# pg_dump / pg_restore of a working database into a fresh cluster: registrations, check and
# capture triggers, a queue that was not purged yet, and archived rows all come across.
# After the restore: the registrations and orphan_report() are identical, the triggers are
# the same and work (an orphan insert is refused, a delete is captured), the restored queue
# drains through the new cluster's worker (also keys whose final pass waited for transaction
# ids of the old cluster, beyond any the new one has assigned), and archived rows can be put
# back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Both clusters start with the worker off, so that what is compared is what was dumped.
sub new_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
	$node->append_conf('postgresql.conf', 'pg_softfk.purge_worker = off');
	$node->append_conf('postgresql.conf', 'max_prepared_transactions = 2');
	$node->start;
	return $node;
}
sub worker_on
{
	my ($node) = @_;
	$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_softfk.purge_worker = on; SELECT pg_reload_conf()});
}

my $old = new_node('old');
$old->safe_psql('postgres', 'CREATE DATABASE lms');
$old->safe_psql('lms', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY, username text UNIQUE);
    INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 100) g;
    -- A dropped column before the key: attribute numbers differ after the restore.
    CREATE TABLE enrollment (id int PRIMARY KEY, legacy int, user_id int, course text);
    ALTER TABLE enrollment DROP COLUMN legacy;
    INSERT INTO enrollment SELECT g, g % 110 + 1, 'course' || g % 5 FROM generate_series(1, 1000) g;
    CREATE INDEX ON enrollment (user_id);
    CREATE TABLE bookmark (id int PRIMARY KEY, user_id int);
    INSERT INTO bookmark SELECT g, g % 100 + 1 FROM generate_series(1, 300) g;
    CREATE TABLE certificate (id int PRIMARY KEY, user_id int NOT NULL, grade numeric);
    INSERT INTO certificate SELECT g, g % 100 + 1, g % 10 FROM generate_series(1, 200) g;
    SELECT softfk_add('enrollment', 'user_id', 'auth_user', validate => 'immediate');
    SELECT softfk_add('bookmark', 'user_id', 'auth_user', on_delete => 'set null');
    SELECT softfk_add('certificate', 'user_id', 'auth_user', on_delete => 'archive');
    -- An adopted foreign key: what softfk_revert needs to put it back comes across too.
    CREATE TABLE note (id int PRIMARY KEY,
        user_id int CONSTRAINT note_user_fk REFERENCES auth_user ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
    INSERT INTO note SELECT g, g FROM generate_series(1, 100) g;
    SELECT softfk_adopt('note', 'user_id');
});
# Users 1-5: deleted and purged, their certificates archived. Users 6-10: deleted, the purge
# not run yet, so their keys wait in the queue.
$old->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 1 AND 5');
$old->safe_psql('lms', 'SELECT count(*) FROM softfk_purge()');
# Users 12 and 13: deleted after the old cluster has used a few thousand transaction ids, and
# purged once while a (prepared) transaction was running: their final pass waits for every
# transaction id below the next one then, a number the new cluster has not reached.
$old->safe_psql('lms', 'SELECT pg_current_xact_id();' x 3000);
$old->safe_psql('lms', 'BEGIN; SELECT pg_current_xact_id(); PREPARE TRANSACTION $$holds_the_horizon$$');
$old->safe_psql('lms', 'DELETE FROM auth_user WHERE id IN (12, 13)');
$old->safe_psql('lms', 'SELECT count(*) FROM softfk_purge()');
$old->safe_psql('lms', 'COMMIT PREPARED $$holds_the_horizon$$');
is($old->safe_psql('lms', q{SELECT count(*) FROM softfk.deletion WHERE final_pass AND final_after IS NOT NULL}),
    '1', 'before the dump: a key waits for its final pass');
$old->safe_psql('lms', 'DELETE FROM auth_user WHERE id BETWEEN 6 AND 10');
is($old->safe_psql('lms', 'SELECT sum(cardinality(keys)) FROM softfk.deletion'), '7',
    'before the dump: seven deleted users are queued');
my $archived_user_1 = $old->safe_psql('lms', q{SELECT count(*) FROM softfk.archived_row WHERE key = '1'});
ok($archived_user_1 > 0, 'and the certificates of user 1 are archived');


my $dump = $old->basedir . '/lms.dump';
$old->command_ok([ 'pg_dump', '-Fc', '-d', $old->connstr('lms'), '-f', $dump ], 'pg_dump -Fc');

my $new = new_node('new');
$new->safe_psql('postgres', 'CREATE DATABASE lms');
$new->command_ok([ 'pg_restore', '--exit-on-error', '-d', $new->connstr('lms'), $dump ],
    'pg_restore into a fresh cluster');

my %same = (
    'registrations' => q{SELECT child, child_column, parent, parent_column, on_delete, validate
                           FROM softfk_references ORDER BY child::text},
    'orphan_report()' => q{SELECT child, child_column, orphan_rows, orphan_keys, sample_keys, rows_examined
                             FROM orphan_report()},
    'check and capture triggers' => q{SELECT tgrelid::regclass::text, tgname, tgenabled, tgdeferrable, tginitdeferred
                                        FROM pg_trigger WHERE tgname LIKE '%softfk%' ORDER BY 1, 2},
    'the queue' => q{SELECT parent_table, parent_column, keys, cause, final_pass FROM softfk.deletion ORDER BY id},
    'the archive' => q{SELECT child_table, key, child_row FROM softfk.archived_row ORDER BY id},
    'softfk_status' => q{SELECT child, pending_keys, rows_deleted, rows_nulled, rows_archived FROM softfk_status},
);
for my $what (sort keys %same)
{
	is($new->safe_psql('lms', $same{$what}), $old->safe_psql('lms', $same{$what}),
		"$what: identical after the restore");
}
like($new->safe_psql('lms', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%softfk%'}),
    qr/^[1-9]/, 'and there are triggers to compare');

# The restored check trigger refuses an orphan; the restored capture trigger queues a delete.
my ($ret, $stdout, $stderr) = $new->psql('lms', 'INSERT INTO enrollment VALUES (5000, 999, NULL)');
like($stderr, qr/violates soft reference/, 'the restored check trigger refuses an orphan');
$new->safe_psql('lms', 'DELETE FROM auth_user WHERE id = 11');
is($new->safe_psql('lms', 'SELECT sum(cardinality(keys)) FROM softfk.deletion'), '8',
    'the restored capture trigger queues a deleted user');
is($new->safe_psql('lms', q{SELECT count(*) FROM softfk.deletion
                             WHERE final_after > pg_snapshot_xmax(pg_current_snapshot())}),
    '1', 'the restored queue waits for a transaction id the new cluster has not assigned');

# The new cluster's worker drains the restored queue and the new entry.
worker_on($new);
ok($new->poll_query_until('lms', q{
        SELECT (SELECT count(*) FROM softfk.deletion) = 0
           AND NOT EXISTS (SELECT FROM enrollment WHERE user_id BETWEEN 6 AND 11)
           AND NOT EXISTS (SELECT FROM bookmark WHERE user_id BETWEEN 6 AND 11)
           AND NOT EXISTS (SELECT FROM certificate WHERE user_id BETWEEN 6 AND 11)}),
    'the worker of the new cluster drains the restored queue, also the key from beyond its ids');
is($new->safe_psql('lms', q{SELECT count(*) FROM softfk.archived_row WHERE key::int BETWEEN 6 AND 11}),
    $old->safe_psql('lms', q{SELECT count(*) FROM certificate WHERE user_id BETWEEN 6 AND 11}),
    'archiving each of those certificates once');

# Rows archived before the dump come back.
$new->safe_psql('lms', q{INSERT INTO auth_user VALUES (1, 'user1')});
is($new->safe_psql('lms', q{SELECT softfk_restore('auth_user', '1')}), $archived_user_1,
    'softfk_restore() puts back rows archived before the dump');
is($new->safe_psql('lms', q{SELECT count(*) FROM certificate WHERE user_id = 1}), $archived_user_1,
    'they are in the table again');

# The adopted key goes back as it was before the dump.
$new->safe_psql('lms', q{CALL softfk_revert('note', 'user_id')});
is($new->safe_psql('lms', q{SELECT conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint
                             WHERE conrelid = 'note'::regclass AND contype = 'f'}),
    'note_user_fk: FOREIGN KEY (user_id) REFERENCES auth_user(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
    'softfk_revert() puts back a key adopted before the dump, as it was');

$old->stop;
$new->stop;
done_testing();
