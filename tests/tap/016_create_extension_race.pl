# CREATE EXTENSION racing the launcher's first look at a new database never leaves the
# database unserved: whether the worker's look finds the extension, misses it by a hair
# (the extension commits between its check and its leaving) or comes after, the database is
# served from then on. Shown by a sweep, which needs no deleting commit to bring a worker:
# orphans made with the capture turned off are purged within seconds (a database found
# without the extension is looked at again only when woken). CREATE EXTENSION lands at 20
# moments from 0 to 1.9 s after CREATE DATABASE: before, during and after the launcher's
# first look (within about a second). Without CREATE EXTENSION's wake-up, the rounds after
# the look fail.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $node = PostgreSQL::Test::Cluster->new('race');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', "pg_softfk.sweep_interval = '1s'");
$node->start;

my $rounds = 20;
for my $round (1 .. $rounds)
{
	my $db = "race$round";
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	sleep(($round - 1) * 0.1);
	$node->safe_psql($db, q{
        CREATE EXTENSION pg_softfk;
        CREATE TABLE auth_user (id int PRIMARY KEY);
        INSERT INTO auth_user SELECT generate_series(1, 20);
        CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL);
        INSERT INTO enrollment (user_id) SELECT g % 20 + 1 FROM generate_series(1, 200) g;
        SELECT softfk_add('enrollment', 'user_id', 'auth_user');
        -- Orphans the capture never sees: no deleting commit wakes anyone.
        SET session_replication_role = replica;
        DELETE FROM auth_user WHERE id <= 5;
    });
	my $start = time;
	$node->poll_query_until($db, q{
            SELECT count(*) FROM enrollment e WHERE NOT EXISTS (SELECT FROM auth_user u WHERE u.id = e.user_id)},
		'0')
	  or die "round $round: the orphans were never purged";
	my $took = time - $start;
	cmp_ok($took, '<', 15,
		sprintf('round %d: CREATE EXTENSION %.1f s after CREATE DATABASE; the sweep purges the orphans in %.1f s',
			$round, ($round - 1) * 0.1, $took));
}

$node->stop;
done_testing();
