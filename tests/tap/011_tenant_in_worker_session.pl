# The purge worker is one long-lived superuser session that runs every child owner's
# triggers, one purge statement after another. A tenant's trigger that changes the session
# (search_path, with set_config(..., false); a deferred trigger, which would fire at the
# worker's COMMIT; releasing the worker's advisory locks) must not change what the next
# statement, run for
# another owner, means: there a cast to "text" resolved through the tenant's schema would run
# the tenant's domain CHECK as that owner (here: the bootstrap superuser, whose rights the
# tenant's function would use to make the tenant a superuser).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{SOFTFK_CLUSTER_CONF}));
$node->append_conf('postgresql.conf', 'pg_softfk.naptime = 100ms');
$node->start;

$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_softfk;
    CREATE ROLE mallory LOGIN;
    CREATE TABLE auth_user (id int PRIMARY KEY, email text UNIQUE);
    INSERT INTO auth_user SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 20) g;
    GRANT REFERENCES ON auth_user TO mallory;
    CREATE SCHEMA mal AUTHORIZATION mallory;
    -- The superuser's tables, purged after mallory's (references go in name order): one
    -- archives (to_jsonb(c)::text), one has a text key (keys as text[]).
    CREATE TABLE zz_history (id int PRIMARY KEY, user_id int, event text);
    INSERT INTO zz_history SELECT g, g, 'login' FROM generate_series(1, 20) g;
    SELECT softfk_add('zz_history', 'user_id', 'auth_user', on_delete => 'archive');
    CREATE TABLE zz_email_log (id int PRIMARY KEY, email text);
    INSERT INTO zz_email_log SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 20) g;
    SELECT softfk_add('zz_email_log', 'email', 'auth_user', 'email');
});
$node->safe_psql('postgres', q{
    SET ROLE mallory;
    -- Makes mallory a superuser when it runs as one.
    CREATE FUNCTION mal.escalate(pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
            ALTER ROLE mallory SUPERUSER;
        END IF;
        RETURN true;
    END $$;
    CREATE DOMAIN mal.text AS pg_catalog.text CHECK (mal.escalate(VALUE));
    CREATE FUNCTION mal.move_the_path() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_catalog.set_config('search_path', 'mal, pg_catalog, public', false);
        RETURN OLD;
    END $$;
    CREATE TABLE mal.aaa_enrollment (id int PRIMARY KEY, user_id int);
    CREATE TRIGGER move_the_path BEFORE DELETE ON mal.aaa_enrollment
        FOR EACH ROW EXECUTE FUNCTION mal.move_the_path();
    -- Deferred: it would fire at the worker's COMMIT, as the worker's superuser.
    CREATE FUNCTION mal.at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM mal.escalate('');
        PERFORM pg_catalog.set_config('search_path', 'mal, pg_catalog, public', false);
        PERFORM pg_catalog.pg_advisory_unlock_all();
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER at_commit AFTER DELETE ON mal.aaa_enrollment
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mal.at_commit();
    INSERT INTO mal.aaa_enrollment SELECT g, g FROM generate_series(1, 20) g;
    SELECT softfk_add('mal.aaa_enrollment', 'user_id', 'auth_user');
});

# Users deleted one at a time and all at once: many purge statements in one worker session.
$node->safe_psql('postgres', "DELETE FROM auth_user WHERE id = $_") for 1 .. 5;
$node->safe_psql('postgres', 'DELETE FROM auth_user WHERE id BETWEEN 6 AND 10');
ok($node->poll_query_until('postgres', q{
        SELECT NOT EXISTS (SELECT FROM softfk.deletion)
           AND NOT EXISTS (SELECT FROM mal.aaa_enrollment WHERE user_id <= 10)
           AND NOT EXISTS (SELECT FROM zz_email_log WHERE id <= 10)
           AND NOT EXISTS (SELECT FROM zz_history WHERE user_id <= 10)}),
    'the worker purges every child of the deleted users');
is($node->safe_psql('postgres', q{SELECT count(*) FROM softfk.archived_row}), '10',
    'archiving each history row once');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
    'the tenant\'s function never ran as the superuser: mallory is no superuser');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT coalesce(last_error, ''), '') FROM softfk_status}),
    '', 'no purge failed');

$node->stop;
done_testing();
