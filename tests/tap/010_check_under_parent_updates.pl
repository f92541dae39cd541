# The check never rejects a key whose parent row exists throughout, however the parent row is
# updated meanwhile. Every login updates auth_user; when such an UPDATE is not HOT (an indexed
# column changes, or the page is full), the parent's unique index holds two entries for the
# key, and the updater may commit between the probe's two heap fetches. A native foreign key
# never fails there (it locks the row); neither may the soft check.
#
# Two pgbench clients update parents 1-3 non-HOT (v is indexed) without a pause, two insert
# children of parents 1-3, checked at statement end ('immediate') or at commit ('deferred'),
# for SOFTFK_STRESS_SECONDS (default 60) in all. Any 23503 aborts an inserting client, and
# pgbench then exits with status 2.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $seconds = $ENV{SOFTFK_STRESS_SECONDS} || 60;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->start;

$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE parent (id int PRIMARY KEY, v int NOT NULL, pad text);
    CREATE INDEX ON parent (v);
    INSERT INTO parent SELECT g, 0, repeat('x', 200) FROM generate_series(1, 3) g;
    CREATE TABLE child_immediate (id bigserial PRIMARY KEY, pid int NOT NULL);
    CREATE TABLE child_deferred (id bigserial PRIMARY KEY, pid int NOT NULL);
    SELECT softfk_add('child_immediate', 'pid', 'parent', validate => 'immediate');
    SELECT softfk_add('child_deferred', 'pid', 'parent', validate => 'deferred');
});

my $dir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$dir/update.sql", q{
\set p random(1, 3)
UPDATE parent SET v = v + 1 WHERE id = :p;
});
PostgreSQL::Test::Utils::append_to_file("$dir/insert.sql", q{
\set p random(1, 3)
INSERT INTO child_immediate (pid) VALUES (:p);
BEGIN;
INSERT INTO child_deferred (pid) VALUES (:p);
COMMIT;
});

# Two pgbench runs side by side, for the same time.
sub pgbench
{
	my ($script, $out, $err) = @_;
	return IPC::Run::start(
		[ 'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds, '-f', $script,
		  '-h', $node->host, '-p', $node->port, 'postgres' ],
		'>', $out, '2>', $err);
}
my ($update_out, $update_err, $insert_out, $insert_err) = ('', '', '', '');
my $updaters = pgbench("$dir/update.sql", \$update_out, \$update_err);
my $inserters = pgbench("$dir/insert.sql", \$insert_out, \$insert_err);
# finish() is true when every child exited with status 0.
my $updaters_ok = $updaters->finish;
my $inserters_ok = $inserters->finish;

my ($updates) = $update_out =~ /number of transactions actually processed: (\d+)/;
my ($inserts) = $insert_out =~ /number of transactions actually processed: (\d+)/;
note "in ${seconds}s: " . ($updates // '?') . " non-HOT parent updates, " . ($inserts // '?')
  . " rounds of checked child inserts";
ok($updaters_ok, 'the updaters ran to the end') or diag $update_err;
cmp_ok($updates // 0, '>', 1000, 'the parent rows were updated all along');
ok($inserters_ok, 'no checked insert was rejected while its parent was being updated')
  or diag $insert_err;
my @rejections = $insert_err =~ /(violates soft reference)/g;
is(scalar @rejections, 0, 'no 23503 in the inserting clients\' output');
is($node->safe_psql('postgres', q{SELECT count(*) FROM orphan_report() WHERE orphan_rows > 0}),
    '0', 'and no orphan was let through');

$node->stop;
done_testing();
