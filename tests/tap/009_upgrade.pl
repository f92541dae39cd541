# ALTER EXTENSION pg_softfk UPDATE from each released version (0.1.0 to 0.6.0, as they
# landed; tests/fixtures/) to the current version: a database that used the old version ends
# with exactly the objects of a fresh install of the current version — functions with their
# bodies and settings, tables, columns, constraints, indexes, triggers, views, event triggers,
# comments, privileges, configuration tables — and what it registered under the old version
# keeps working: writes are checked, deletes purged, and softfk_revert works on the old
# registrations.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->start;

my $current = $node->safe_psql('postgres',
    q{SELECT default_version FROM pg_available_extensions WHERE name = 'pg_softfk'});
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_softfk');

# The check triggers on a child, with the reference id left out.
my $check_triggers = q{
    SELECT string_agg(regexp_replace(pg_get_triggerdef(oid), 'check_key\(''[0-9]+''\)', 'check_key(id)'),
                      E'\n' ORDER BY tgname)
      FROM pg_trigger WHERE tgrelid = 'bookmark'::regclass
       AND tgfoid = 'softfk.check_key()'::regprocedure};
$node->safe_psql('fresh', q{
    CREATE TABLE auth_user (id int PRIMARY KEY);
    CREATE TABLE bookmark (id int PRIMARY KEY, user_id int);
    SELECT softfk_add('bookmark', 'user_id', 'auth_user', on_delete => 'set null');
});
my $fresh_check_triggers = $node->safe_psql('fresh', $check_triggers);
like($fresh_check_triggers, qr/AFTER UPDATE ON public\.bookmark .*check_key/,
    'a fresh install checks every UPDATE');
unlike($fresh_check_triggers, qr/WHEN/, 'with no WHEN clause');

# Every object of the extension, described without oids.
my $describe = q{
    WITH member AS (
        SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pg_softfk')
    SELECT pg_describe_object(m.classid, m.objid, 0) || E'\n' || coalesce(
        CASE m.classid
        WHEN 'pg_proc'::regclass THEN
            (SELECT pg_get_functiondef(p.oid) || coalesce(array_to_string(p.proacl, ','), '')
               FROM pg_proc p WHERE p.oid = m.objid AND p.prokind <> 'a')
        WHEN 'pg_class'::regclass THEN
            (SELECT c.relkind::text || ' ' || coalesce(array_to_string(c.relacl, ','), '') || E'\n' ||
                    coalesce(pg_get_viewdef(c.oid), '') ||
                    coalesce((SELECT string_agg(format('%s %s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod),
                                                       a.attnotnull, a.attidentity, pg_get_expr(ad.adbin, ad.adrelid)),
                                                E'\n' ORDER BY a.attnum)
                                FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') || E'\n' ||
                    coalesce((SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), E'\n' ORDER BY conname)
                                FROM pg_constraint WHERE conrelid = c.oid), '') || E'\n' ||
                    coalesce((SELECT string_agg(pg_get_indexdef(indexrelid), E'\n' ORDER BY 1)
                                FROM pg_index WHERE indrelid = c.oid), '') || E'\n' ||
                    coalesce((SELECT string_agg(pg_get_triggerdef(t.oid), E'\n' ORDER BY t.tgname)
                                FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '')
               FROM pg_class c WHERE c.oid = m.objid)
        WHEN 'pg_event_trigger'::regclass THEN
            (SELECT format('%s %s %s %s', evtevent, evtfoid::regproc, evtenabled, evttags)
               FROM pg_event_trigger WHERE oid = m.objid)
        WHEN 'pg_namespace'::regclass THEN
            (SELECT coalesce(array_to_string(nspacl, ','), '') FROM pg_namespace WHERE oid = m.objid)
        END, '') || E'\n' || coalesce(obj_description(m.objid, m.classid::regclass::text), '')
      FROM member m
    UNION ALL
    SELECT 'configuration tables: ' || (SELECT string_agg(c::regclass::text, ', ' ORDER BY c::regclass::text)
                                          FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'pg_softfk')
    ORDER BY 1};
my $fresh = $node->safe_psql('fresh', $describe);
like($fresh, qr/softfk_revert/, 'the description covers the current objects');

for my $from ('0.1.0', '0.2.0', '0.3.0', '0.4.0', '0.5.0', '0.6.0')
{
    isnt($current, $from, "the current version ($current) is not $from");
    (my $db = "from_$from") =~ s/\./_/g;
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, qq{
        CREATE EXTENSION pg_softfk VERSION '$from';
        CREATE TABLE auth_user (id int PRIMARY KEY);
        INSERT INTO auth_user SELECT generate_series(1, 20);
        CREATE TABLE enrollment (id int PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE CASCADE);
        INSERT INTO enrollment SELECT g, g FROM generate_series(1, 20) g;
        CREATE TABLE bookmark (id int PRIMARY KEY, user_id int);
        INSERT INTO bookmark SELECT g, g FROM generate_series(1, 20) g;
        SELECT softfk_adopt('enrollment', 'user_id');
        SELECT softfk_add('bookmark', 'user_id', 'auth_user', on_delete => 'set null');
    });
    is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'pg_softfk'}),
        $from, "a database uses $from");
    # Until the update, the old check triggers run on the new library.
    my ($ret_before, $stdout_before, $stderr_before) =
        $node->psql($db, 'INSERT INTO bookmark VALUES (100, 999)');
    like($stderr_before, qr/violates soft reference/,
        "before the update, a check trigger made by $from refuses an orphan on the new library");
    $node->safe_psql($db, 'INSERT INTO bookmark VALUES (100, 1), (101, 1); DELETE FROM bookmark WHERE id >= 100');
    # A check queued before the update, in its transaction, still runs.
    my ($ret_pending, $stdout_pending, $stderr_pending) = $node->psql($db,
        'BEGIN; INSERT INTO bookmark VALUES (102, 998); ALTER EXTENSION pg_softfk UPDATE; COMMIT;');
    like($stderr_pending, qr/violates soft reference/,
        "an orphan written before ALTER EXTENSION UPDATE from $from, in its transaction, is refused");
    is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'pg_softfk'}),
        $from, "... and the update with it");
    $node->safe_psql($db, 'ALTER EXTENSION pg_softfk UPDATE');
    is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'pg_softfk'}),
        $current, "ALTER EXTENSION pg_softfk UPDATE brings $from to the current version");

    my $updated = $node->safe_psql($db, $describe);
    is($updated, $fresh, "updated from $from, the database has exactly the objects of a fresh install");
    if ($updated ne $fresh)
    {
        my %fresh = map { $_ => 1 } split /\n/, $fresh;
        my %updated = map { $_ => 1 } split /\n/, $updated;
        diag("only after the update: $_") for grep { !$fresh{$_} } split /\n/, $updated;
        diag("only in a fresh install: $_") for grep { !$updated{$_} } split /\n/, $fresh;
    }

    is($node->safe_psql($db, $check_triggers), $fresh_check_triggers,
        "updated from $from, a checked child has the check triggers of a fresh install");

    # What the old version registered keeps working.
    my ($ret, $stdout, $stderr) = $node->psql($db, 'INSERT INTO bookmark VALUES (100, 999)');
    like($stderr, qr/violates soft reference/, "a check trigger made by $from still refuses an orphan");
    $node->safe_psql($db, 'DELETE FROM auth_user WHERE id = 3');
    ok($node->poll_query_until($db, q{
            SELECT NOT EXISTS (SELECT FROM enrollment WHERE user_id = 3)
               AND (SELECT user_id IS NULL FROM bookmark WHERE id = 3)}),
        "a delete is captured and purged through the triggers $from made");
    is($node->safe_psql($db, q{SELECT adoptable FROM softfk_discover('auth_user') WHERE kind = 'registered' LIMIT 1}),
        'f', 'softfk_discover() answers with its current columns');
    $node->safe_psql($db, q{CALL softfk_revert('enrollment', 'user_id')});
    is($node->safe_psql($db, q{SELECT pg_get_constraintdef(oid) FROM pg_constraint
                                WHERE conrelid = 'enrollment'::regclass AND contype = 'f'}),
        'FOREIGN KEY (user_id) REFERENCES auth_user(id) ON DELETE CASCADE',
        "softfk_revert() turns a reference adopted under $from back into a foreign key");
}

$node->stop;
done_testing();
