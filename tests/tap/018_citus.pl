# Citus (docs/citus.md). pg_softfk does not support tables Citus manages yet; it must refuse them
# up front instead of registering a reference that breaks writes or never purges:
# - a distributed child, a reference-table parent, a Citus local table: refused with 0A000 and
#   a hint, and nothing is written (no registry row, no trigger);
# - Citus refuses to distribute a table that is already registered (it has triggers), so a
#   registration cannot become a Citus table behind pg_softfk's back;
# - tables Citus does not manage work as anywhere else in a Citus database: check, purge.
# Skipped when citus is not installed for the server under test (it is in no package
# registry this project installs from).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('citus');
my $libdir = $node->config_data('--pkglibdir');
plan skip_all => "citus is not installed for this server ($libdir)"
  unless -e "$libdir/citus.so";

$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
# Citus must come first. One node that holds shards itself: enough to make Citus tables.
$node->append_conf('postgresql.conf', qq{shared_preload_libraries = 'citus, pg_softfk'
max_worker_processes = 32
pg_softfk.naptime = '200ms'});
$node->start;

my $host = $node->host;
my $port = $node->port;
$node->safe_psql('postgres', qq{
    SET client_min_messages = warning;
    CREATE EXTENSION citus;
    CREATE EXTENSION pg_softfk;
    SELECT citus_set_coordinator_host('$host', $port);
    SELECT citus_set_node_property('$host', $port, 'shouldhaveshards', true);
    CREATE TABLE auth_user (id int PRIMARY KEY);
    SELECT create_reference_table('auth_user');
    CREATE TABLE enrollment (id int, user_id int NOT NULL);
    SELECT create_distributed_table('enrollment', 'user_id');
    CREATE TABLE course (id int PRIMARY KEY);
    SELECT citus_add_local_table_to_metadata('course');
    CREATE TABLE account (id int PRIMARY KEY);
    INSERT INTO account SELECT generate_series(1, 10);
    CREATE TABLE bookmark (id serial PRIMARY KEY, account_id int NOT NULL, course_id int);
});

# The error a statement raises: "SQLSTATE: message / HINT: hint".
sub error_of
{
	my ($sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	my ($code, $message) = $stderr =~ /ERROR:\s+([0-9A-Z]{5}): ([^\n]*)/;
	my ($hint) = $stderr =~ /HINT:\s+([^\n]*)/;
	return defined $code ? "$code: $message / HINT: " . ($hint // '') : "no error ($stderr)";
}

my $hint = 'Keep a native foreign key to a reference table, or register soft references '
  . 'between tables Citus does not manage (docs/citus.md).';
for my $refused (
	[ q{SELECT softfk_add('enrollment', 'user_id', 'account')},
	  'child "enrollment" is a Citus distributed table', 'a distributed child is refused up front' ],
	[ q{SELECT softfk_add('bookmark', 'account_id', 'auth_user')},
	  'parent "auth_user" is a Citus reference table', 'a reference-table parent is refused up front' ],
	[ q{SELECT softfk_add('bookmark', 'course_id', 'course')},
	  'parent "course" is a Citus local table', 'a Citus local table is refused up front' ],
	[ q{SELECT softfk_add('enrollment', 'user_id', 'auth_user')},
	  'child "enrollment" is a Citus distributed table',
	  'so is the shape Citus users want most (distributed child, reference parent)' ])
{
	my ($sql, $message, $name) = @$refused;
	is(error_of($sql), "0A000: $message / HINT: $hint", $name);
}
is($node->safe_psql('postgres', q{
        SELECT (SELECT count(*) FROM softfk.reference)
             + (SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                 WHERE p.proname LIKE '%softfk%' OR t.tgname LIKE 'softfk%')}),
    '0', 'nothing was registered and no trigger created');

# Tables Citus does not manage: as anywhere else.
$node->safe_psql('postgres', q{SELECT softfk_add('bookmark', 'account_id', 'account', validate => 'immediate')});
is(error_of(q{INSERT INTO bookmark (account_id) VALUES (404)}) =~ s/ \/ HINT:.*//r,
    '23503: insert or update on table "bookmark" violates soft reference bookmark(account_id) -> account(id)',
    'a plain child in a Citus database is checked');
$node->safe_psql('postgres', q{INSERT INTO bookmark (account_id) SELECT generate_series(1, 10)});
$node->safe_psql('postgres', q{DELETE FROM account WHERE id <= 3});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 7 FROM bookmark}),
    "and the worker purges a deleted account's rows");

# A registered table cannot become a Citus table: Citus refuses tables with triggers.
like(error_of(q{SELECT create_distributed_table('bookmark', 'account_id')}),
    qr/^XX000: cannot distribute relation "bookmark" because it has triggers/,
    'Citus refuses to distribute a registered child');
like(error_of(q{SELECT create_reference_table('account')}),
    qr/^XX000: cannot distribute relation "account" because it has triggers/,
    'and to make a registered parent a reference table');

$node->stop;
done_testing();
