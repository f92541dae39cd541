# The extension in a real cluster: it loads through shared_preload_libraries, and its
# registrations and report survive a clean restart and a crash (immediate stop) restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->start;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
    'pg_softfk', 'the cluster preloads pg_softfk');

$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_softfk;
    CREATE TABLE auth_user (id int PRIMARY KEY);
    INSERT INTO auth_user SELECT generate_series(1, 100);
    CREATE TABLE student_courseenrollment (id serial PRIMARY KEY, user_id int NOT NULL);
    INSERT INTO student_courseenrollment (user_id) SELECT g % 110 + 1 FROM generate_series(1, 1000) g;
    CREATE TABLE program_enrollment (id serial PRIMARY KEY, user_id int);
    INSERT INTO program_enrollment (user_id) VALUES (1), (NULL), (500);
    SELECT softfk_add('student_courseenrollment', 'user_id', 'auth_user');
    SELECT softfk_add('program_enrollment', 'user_id', 'auth_user', on_delete => 'set null');
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_softfk'}),
    '1', 'CREATE EXTENSION works in a preloading cluster');

my $report = q{SELECT child, child_column, orphan_rows, orphan_keys, sample_keys, rows_examined
                 FROM orphan_report()};
my $references = q{SELECT child, child_column, parent, parent_column, on_delete, validate
                     FROM softfk_references};
my $before = $node->safe_psql('postgres', $report);
is($before,
    "program_enrollment|user_id|1|1|{500}|2\n"
  . "student_courseenrollment|user_id|90|10|{101,102,103,104,105,106,107,108,109,110}|1000",
    'the report finds the planted orphans');
my $registered = $node->safe_psql('postgres', $references);

$node->restart;
is($node->safe_psql('postgres', $references), $registered, 'registrations survive a restart');
is($node->safe_psql('postgres', $report), $before, 'the report is unchanged after a restart');

$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', $references), $registered,
    'registrations survive a crash restart (WAL replay)');
is($node->safe_psql('postgres', $report), $before,
    'the report is unchanged after a crash restart');

$node->stop;
done_testing();
