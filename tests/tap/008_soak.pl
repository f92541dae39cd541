# The soak: mixed load for SOFTFK_SOAK_SECONDS (default 600) — child inserts checked by
# soft references (deferred and immediate), enrollments of nobody (refused), users deleted
# and created again, logins updating the users table — while the worker purges; halfway, the
# worker is killed with SIGKILL (the postmaster restarts every backend, and the load is
# started again). Then the invariants of bench/soak/invariants.sql must hold: the queue
# drains, no validated child keeps an orphan, no row of a live user generation was purged,
# none twice, the archive matches, the run log is consistent.
#
# Long: it runs only when SOFTFK_SOAK=1 (bench/soak.sh sets it and reports the figures).
use strict;
use warnings;
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

plan skip_all => 'the soak runs only with SOFTFK_SOAK=1 (bash bench/soak.sh)' unless $ENV{SOFTFK_SOAK};
my $seconds = $ENV{SOFTFK_SOAK_SECONDS} || 600;
my $soak = dirname(__FILE__) . '/../../bench/soak';

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', "max_connections = 40\nsynchronous_commit = off\nrestart_after_crash = on\nlog_statement = none");
# A worker that stays in its database (013 tests how workers come and go with the work).
$node->append_conf('postgresql.conf', q{pg_softfk.worker_idle_timeout = '1h'});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE soak');
$node->safe_psql('soak', slurp_file("$soak/schema.sql"));

# One pgbench run of the mixed load in the background; returns its harness and output refs.
sub start_load
{
	my ($duration) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('pgbench', '-n', '-c', '6', '-j', '2', '-T', int($duration),
		'-f', "$soak/enroll.sql\@10", '-f', "$soak/enroll_nobody.sql\@1",
		'-f', "$soak/churn.sql\@2", '-f', "$soak/login.sql\@4",
		'-h', $node->host, '-p', $node->port, 'soak');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}
sub transactions
{
	my ($out) = @_;
	my %n;
	while ($$out =~ /SQL script \d+: \S+\/(\w+)\.sql\n - weight: \d+ \(targets [\d.]+% of total\)\n - (\d+) transactions/g)
	{
		$n{$1} += $2;
	}
	return %n;
}
sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'soak'});
}
my $max_pending = 0;
sub watch
{
	my ($h, $until) = @_;
	while ($h->pumpable && time() < $until)
	{
		$h->pump_nb;
		my $pending = $node->safe_psql('soak',
			'SELECT coalesce(sum(cardinality(keys)), 0) FROM softfk.deletion', on_error_die => 0);
		$max_pending = $pending if $pending =~ /^\d+$/ && $pending > $max_pending;
		usleep(500_000);
	}
}

ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'soak'}, '1'),
    'the purge worker serves the soak database');

# First half, with the worker killed in the middle of it.
my $started = time();
my ($h1, $out1) = start_load($seconds / 2);
watch($h1, $started + $seconds / 4);
my $victim = worker_pid();
like($victim, qr/^\d+$/, 'the purge worker is running halfway through the first half');
kill 'KILL', $victim;
$h1->finish;    # the postmaster's restart ends every client's session
ok($node->poll_query_until('postgres',
        qq{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'soak' AND pid <> $victim}, '1'),
    'after SIGKILL the cluster restarts and a new purge worker serves the database');

# The rest of the time.
my $remaining = $seconds - (time() - $started);
my ($h2, $out2) = start_load($remaining > 5 ? $remaining : 5);
watch($h2, time() + $remaining + 60);
$h2->finish;
my $load_ended = time();

# Then the worker drains what is left; the sweep is not needed.
ok($node->poll_query_until('soak', q{SELECT count(*) FROM softfk.deletion}, '0'),
    'the queue drains after the load');
my $drain = time() - $load_ended;

my %n = transactions($out1);
my %n2 = transactions($out2);
$n{$_} += $n2{$_} for keys %n2;
my $invariants = $node->safe_psql('soak', slurp_file("$soak/invariants.sql"));
for my $line (split /\n/, $invariants)
{
	my ($invariant, $holds, $found) = split /\|/, $line;
	is($holds, 't', "$invariant (found: $found)");
}

# The figures, for BENCHMARKS.md (bench/soak.sh prints them).
my $figures = $node->safe_psql('soak', q{
    SELECT 'child rows inserted: ' || pg_catalog.nextval('soak.inserted') - 1
    UNION ALL SELECT 'writes refused by the check: ' || pg_catalog.nextval('soak.refused') - 1
    UNION ALL SELECT 'users deleted: ' || count(*) FROM soak.user_deleted
    UNION ALL SELECT 'users created again: ' || (SELECT count(*) FROM soak.users WHERE generation > 1)
    UNION ALL SELECT 'child rows purged: deleted ' || sum(rows_deleted) || ', nulled ' || sum(rows_nulled)
                     || ', archived ' || sum(rows_archived) FROM softfk_status
    UNION ALL SELECT 'purge runs: ' || string_agg(status || ' ' || n, ', ' ORDER BY status)
                FROM (SELECT status, count(*) AS n FROM softfk.purge_run GROUP BY status) s
    UNION ALL SELECT 'orphans left: ' || sum(orphan_rows) FROM orphan_report()});
diag("soak figures ($seconds s, SIGKILL of the worker at " . int($seconds / 4) . " s):");
diag("pgbench transactions: " . join(', ', map { "$_ $n{$_}" } sort keys %n));
diag($_) for split /\n/, $figures;
diag(sprintf('largest queue seen: %d keys; drained %.1f s after the load stopped', $max_pending, $drain));

$node->stop;
done_testing();
