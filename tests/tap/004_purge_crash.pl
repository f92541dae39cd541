# Crash safety of the purge: every batch is one transaction that changes child rows and
# records its progress in the queue, so a purge interrupted by a crash (kill -9 of the purge
# worker, which makes the postmaster restart the cluster) or by an immediate shutdown resumes
# where it stopped and applies every action exactly once: no child row of a deleted user is
# left, no row of a live user is touched, no archived row is archived twice, and the run log
# shows the interrupted run as failed and a later one as completed.
#
# To interrupt the purge at a known point, the purge is made slow (5 keys per batch, 8 rows
# per statement) and, once it has visibly made progress, a session locks a set null child row
# of the last key in the queue. The worker (pg_softfk.lock_timeout = 0: it waits) stops on that
# row in the middle of its last batch, after that batch's archive and cascade statements ran
# and before it commits. That is when the cluster goes down. The last case is a backlog read
# in physical order (pg_softfk.scan_threshold = 100), stopped partway through its first pass
# by a trigger on the set null child waiting for an advisory lock.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
# PostgreSQL::Test::Cluster turns this off; a crashed backend must restart the cluster here.
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
# A worker that stays in its database (013 tests how workers come and go with the work).
$node->append_conf('postgresql.conf', q{pg_softfk.worker_idle_timeout = '1h'});
$node->start;

$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY, username text NOT NULL);
    INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 2000) g;

    -- Processed in this order in a batch (by child name): archive, cascade, set null.
    CREATE TABLE certificate (id int PRIMARY KEY, user_id int NOT NULL, grade numeric, issued date);
    INSERT INTO certificate
         SELECT g, g % 2000 + 1, g % 100 / 10.0, date '2020-01-01' + g % 900 FROM generate_series(1, 6000) g;
    CREATE INDEX ON certificate (user_id);
    CREATE TABLE enrollment (id int PRIMARY KEY, user_id int NOT NULL, course text);
    INSERT INTO enrollment SELECT g, g % 2000 + 1, 'course' || g % 37 FROM generate_series(1, 16000) g;
    CREATE INDEX ON enrollment (user_id);
    CREATE TABLE survey_answer (id int PRIMARY KEY, user_id int, answer text);
    INSERT INTO survey_answer SELECT g, g % 2000 + 1, 'answer' || g FROM generate_series(1, 6000) g;
    INSERT INTO survey_answer SELECT g, NULL, 'anonymous' FROM generate_series(6001, 6100) g;
    CREATE INDEX ON survey_answer (user_id);

    -- In the last case, where the purge stops (below).
    CREATE FUNCTION wait_at_last_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.user_id IS NULL AND OLD.user_id = (SELECT max(id) FROM public.doomed) THEN
            PERFORM pg_catalog.pg_advisory_xact_lock(42);
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER wait_at_last_doomed BEFORE UPDATE ON survey_answer
        FOR EACH ROW EXECUTE FUNCTION wait_at_last_doomed();

    SELECT softfk_add('certificate', 'user_id', 'auth_user', on_delete => 'archive');
    SELECT softfk_add('enrollment', 'user_id', 'auth_user');
    SELECT softfk_add('survey_answer', 'user_id', 'auth_user', on_delete => 'set null');
    VACUUM ANALYZE;

    ALTER SYSTEM SET pg_softfk.keys_per_batch = 5;
    ALTER SYSTEM SET pg_softfk.rows_per_statement = 8;
    ALTER SYSTEM SET pg_softfk.lock_timeout = 0;
    SELECT pg_reload_conf();
});

my $worker = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'postgres'};
ok($node->poll_query_until('postgres', "SELECT count(*) FROM ($worker) w", '1'), 'the purge worker runs');

# What each table must hold once the users in table doomed are deleted and purged, as md5s
# of the rows in id order.
my $expected_state = q{
    SELECT md5(coalesce(string_agg(c::text, ',' ORDER BY id), '')) FROM certificate c
     WHERE user_id NOT IN (SELECT id FROM doomed)
    UNION ALL
    SELECT md5(coalesce(string_agg(e::text, ',' ORDER BY id), '')) FROM enrollment e
     WHERE user_id NOT IN (SELECT id FROM doomed)
    UNION ALL
    SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM (
        SELECT id, CASE WHEN user_id IN (SELECT id FROM doomed) THEN NULL ELSE user_id END AS user_id,
               answer
          FROM survey_answer) s
    UNION ALL
    SELECT md5(coalesce(string_agg(to_jsonb(c)::text, ',' ORDER BY id), '')) FROM certificate c
     WHERE user_id IN (SELECT id FROM doomed)};
my $actual_state = q{
    SELECT md5(coalesce(string_agg(c::text, ',' ORDER BY id), '')) FROM certificate c
    UNION ALL
    SELECT md5(coalesce(string_agg(e::text, ',' ORDER BY id), '')) FROM enrollment e
    UNION ALL
    SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM survey_answer s
    UNION ALL
    SELECT md5(coalesce(string_agg(child_row::text, ',' ORDER BY (child_row->>'id')::int), ''))
      FROM softfk.archived_row
     WHERE child_table = 'certificate'::regclass AND key::int IN (SELECT id FROM doomed)};
my $totals = q{SELECT string_agg(rows_deleted || '/' || rows_nulled || '/' || rows_archived, ' ' ORDER BY child::text)
                 FROM softfk_status};

# interrupted_purge(label, which users to delete, how to bring the cluster down and up[, in
# physical order])
sub interrupted_purge
{
	my ($label, $where, $interrupt, $physical_order) = @_;

	$node->safe_psql('postgres', qq{
	    DROP TABLE IF EXISTS doomed;
	    CREATE TABLE doomed AS SELECT id FROM auth_user WHERE $where;
	});
	my $expected = $node->safe_psql('postgres', $expected_state);
	my ($n_certificates, $n_enrollments, $n_answers) = split /\|/, $node->safe_psql('postgres', q{
	    SELECT (SELECT count(*) FROM certificate WHERE user_id IN (SELECT id FROM doomed)) || '|'
	        || (SELECT count(*) FROM enrollment WHERE user_id IN (SELECT id FROM doomed)) || '|'
	        || (SELECT count(*) FROM survey_answer WHERE user_id IN (SELECT id FROM doomed))});
	my ($deleted0, $nulled0, $archived0) = (0, 0, 0);
	for (split / /, $node->safe_psql('postgres', $totals))
	{
		my ($d, $n, $a) = split m{/};
		($deleted0, $nulled0, $archived0) = ($deleted0 + $d, $nulled0 + $n, $archived0 + $a);
	}

	my $blocker = $node->background_psql('postgres');
	if ($physical_order)
	{
		# The set null child's trigger waits, at the row of the last doomed user, for an
		# advisory lock the blocker holds: the first pass in physical order stops partway
		# through that child (read last, a few blocks a batch), after the other children's
		# batches and its own first ones committed.
		$blocker->query_safe(q{SELECT pg_advisory_lock(42)});
		$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id IN (SELECT id FROM doomed)');
	}
	else
	{
		$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id IN (SELECT id FROM doomed)');
		# Wait for visible progress, then block the last batch on a row lock: the last key of
		# the newest queue row (the capture splits a statement's keys into rows of at most
		# 1000; the purge takes them oldest first).
		ok($node->poll_query_until('postgres', q{
		        SELECT EXISTS (SELECT FROM softfk.purge_run WHERE status = 'running')
		           AND EXISTS (SELECT FROM softfk.deletion WHERE keys_done > 0)}),
		    "$label: the worker starts purging in batches");
		$blocker->query_safe(q{
		    BEGIN;
		    SELECT id FROM survey_answer
		     WHERE user_id = (SELECT keys[cardinality(keys)]::int FROM softfk.deletion ORDER BY id DESC LIMIT 1)
		       FOR UPDATE});
	}
	ok($node->poll_query_until('postgres', q{
	        SELECT wait_event_type FROM pg_stat_activity
	         WHERE backend_type = 'pg_softfk purge' AND datname = 'postgres'}, 'Lock'),
	    "$label: the worker reaches the last batch and waits for the locked child row");
	if ($physical_order)
	{
		like($node->safe_psql('postgres', q{
		        SELECT query FROM pg_stat_activity
		         WHERE backend_type = 'pg_softfk purge' AND datname = 'postgres'}),
		    qr/survey_answer.*first pass in physical order/,
		    "$label: it is the first pass in physical order, at the set null child");
	}
	is($node->safe_psql('postgres', qq{
	        SELECT count(*) BETWEEN 1 AND $n_answers - 1 FROM survey_answer
	         WHERE user_id IN (SELECT id FROM doomed)}),
	    't', "$label: when interrupted, the purge is partway (some children purged, some not)");
	my $interrupted_run = $node->safe_psql('postgres',
	    q{SELECT id FROM softfk.purge_run WHERE status = 'running'});

	$interrupt->();
	eval { $blocker->quit };    # its server went away

	ok($node->poll_query_until('postgres', 'SELECT 1', '1'), "$label: the cluster is back");
	ok($node->poll_query_until('postgres', 'SELECT count(*) FROM softfk.deletion', '0'),
	    "$label: a new purge worker resumes and empties the queue");
	ok($node->poll_query_until('postgres',
	        q{SELECT count(*) FROM softfk.purge_run WHERE status = 'running'}, '0'),
	    "$label: the resumed run finishes");

	my @want = split /\n/, $expected;
	my @got = split /\n/, $node->safe_psql('postgres', $actual_state);
	is($got[0], $want[0], "$label: archive: the child table holds exactly the rows of live users, unchanged");
	is($got[1], $want[1], "$label: cascade: the child table holds exactly the rows of live users, unchanged");
	is($got[2], $want[2],
	    "$label: set null: exactly the rows of deleted users are nulled, every other row is unchanged");
	is($got[3], $want[3], "$label: archive: softfk.archived_row holds each archived row, as it was");
	is($node->safe_psql('postgres', q{
	        SELECT count(*) || ' ' || count(DISTINCT child_row->>'id') FROM softfk.archived_row
	         WHERE key::int IN (SELECT id FROM doomed)}),
	    "$n_certificates $n_certificates", "$label: each archived row is in the archive exactly once");
	is($node->safe_psql('postgres', q{
	        SELECT (SELECT count(*) FROM certificate WHERE user_id IN (SELECT id FROM doomed))
	             + (SELECT count(*) FROM enrollment WHERE user_id IN (SELECT id FROM doomed))
	             + (SELECT count(*) FROM survey_answer WHERE user_id IN (SELECT id FROM doomed))}),
	    '0', "$label: no child row references a deleted user");
	is($node->safe_psql('postgres', $totals),
	    '0/0/' . ($archived0 + $n_certificates) . ' '
	      . ($deleted0 + $n_enrollments) . '/0/0 0/'
	      . ($nulled0 + $n_answers) . '/0',
	    "$label: softfk_status counts every row once (the interrupted batch is not counted)");
	is($node->safe_psql('postgres', "SELECT status FROM softfk_purge_runs WHERE id = $interrupted_run"),
	    'failed', "$label: the interrupted run shows as failed in softfk_purge_runs");
	like($node->safe_psql('postgres', "SELECT errors::text FROM softfk_purge_runs WHERE id = $interrupted_run"),
	    qr/interrupted/, "$label: its errors say it was interrupted");
	is($node->safe_psql('postgres', qq{
	        SELECT count(*) > 0 AND bool_and(status = 'completed') FROM softfk_purge_runs
	         WHERE id > $interrupted_run}),
	    't', "$label: a later run completed the purge");
}

my $log_offset = -s $node->logfile;
interrupted_purge('kill -9 of the worker', 'id % 2 = 0', sub {
	my $pid = $node->safe_psql('postgres', $worker);
	kill 'KILL', $pid;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
});

interrupted_purge('immediate shutdown', 'id % 4 = 1', sub {
	$node->stop('immediate');
	$node->start;
});

# A backlog past pg_softfk.scan_threshold, read in physical order: the position the pass
# recorded is where it goes on.
$node->safe_psql('postgres', q{
    ALTER SYSTEM SET pg_softfk.scan_threshold = 100;
    SELECT pg_reload_conf();
});
$log_offset = -s $node->logfile;
interrupted_purge('kill -9 of the worker, in physical order', 'id % 4 = 3', sub {
	my $pid = $node->safe_psql('postgres', $worker);
	kill 'KILL', $pid;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
}, 1);

$node->stop;
done_testing();
