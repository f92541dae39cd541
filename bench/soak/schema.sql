-- The soak's database (bench/soak.sh, tests/tap/008_soak.pl). Users carry a generation: a
-- user deleted and created again with the same id is a new generation, and every child row
-- records the generation it was written for. Triggers log every deleted user generation
-- and every child row the purge deletes, nulls or archives, so that the invariants can be
-- checked afterwards (invariants.sql). They name everything with its schema: the purge
-- worker runs them with search_path = pg_catalog, pg_temp.
CREATE EXTENSION pg_softfk;
CREATE SCHEMA soak;
CREATE TABLE soak.users (id int PRIMARY KEY, generation int NOT NULL, last_login timestamptz);
INSERT INTO soak.users SELECT g, 1, now() FROM generate_series(1, 5000) g;

-- Children: one per action and check mode.
CREATE TABLE soak.enrollment (id bigserial PRIMARY KEY, user_id int NOT NULL, generation int NOT NULL);
CREATE INDEX ON soak.enrollment (user_id);
CREATE TABLE soak.bookmark (id bigserial PRIMARY KEY, user_id int, generation int NOT NULL);
CREATE INDEX ON soak.bookmark (user_id);
CREATE TABLE soak.certificate (id bigserial PRIMARY KEY, user_id int NOT NULL, generation int NOT NULL);
CREATE INDEX ON soak.certificate (user_id);
SELECT softfk_add('soak.enrollment', 'user_id', 'soak.users', on_delete => 'cascade', validate => 'deferred');
SELECT softfk_add('soak.bookmark', 'user_id', 'soak.users', on_delete => 'set null', validate => 'immediate');
SELECT softfk_add('soak.certificate', 'user_id', 'soak.users', on_delete => 'archive', validate => 'deferred');

-- What happened, for the invariants.
CREATE TABLE soak.user_deleted (user_id int, generation int, deleted_at timestamptz DEFAULT pg_catalog.clock_timestamp());
CREATE TABLE soak.purged (child text, child_id bigint, user_id int, generation int,
                          purged_at timestamptz DEFAULT pg_catalog.clock_timestamp());
CREATE SEQUENCE soak.inserted;
CREATE SEQUENCE soak.refused;
CREATE SEQUENCE soak.recreated;

CREATE FUNCTION soak.log_user_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak.user_deleted (user_id, generation) VALUES (OLD.id, OLD.generation);
    RETURN NULL;
END $$;
CREATE TRIGGER log_deleted AFTER DELETE ON soak.users FOR EACH ROW EXECUTE FUNCTION soak.log_user_deleted();

CREATE FUNCTION soak.log_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak.purged (child, child_id, user_id, generation)
    VALUES (TG_TABLE_NAME, OLD.id, OLD.user_id, OLD.generation);
    RETURN NULL;
END $$;
CREATE TRIGGER log_purged AFTER DELETE ON soak.enrollment FOR EACH ROW EXECUTE FUNCTION soak.log_purged();
CREATE TRIGGER log_purged AFTER DELETE ON soak.certificate FOR EACH ROW EXECUTE FUNCTION soak.log_purged();
CREATE TRIGGER log_purged AFTER UPDATE OF user_id ON soak.bookmark FOR EACH ROW
    WHEN (OLD.user_id IS NOT NULL AND NEW.user_id IS NULL) EXECUTE FUNCTION soak.log_purged();

-- A child row for a user that exists now (in this snapshot), its check run at once inside
-- the block (SET CONSTRAINTS ALL IMMEDIATE), so that a user deleted meanwhile makes a refusal
-- counted here rather than a failed transaction. What commits after the check and before
-- the user's delete commits is the race window the purge's final pass closes.
CREATE FUNCTION soak.enroll(uid int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak.enrollment (user_id, generation) SELECT id, generation FROM soak.users WHERE id = uid;
    INSERT INTO soak.bookmark (user_id, generation) SELECT id, generation FROM soak.users WHERE id = uid + 1;
    IF uid % 4 = 0 THEN
        INSERT INTO soak.certificate (user_id, generation) SELECT id, generation FROM soak.users WHERE id = uid;
    END IF;
    SET CONSTRAINTS ALL IMMEDIATE;
    PERFORM pg_catalog.nextval('soak.inserted');
EXCEPTION WHEN foreign_key_violation THEN
    PERFORM pg_catalog.nextval('soak.refused');
END $$;

-- An enrollment for a user that does not exist: always refused.
CREATE FUNCTION soak.enroll_nobody() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak.enrollment (user_id, generation) VALUES (-1 - (pg_catalog.random() * 1000)::int, 0);
    SET CONSTRAINTS ALL IMMEDIATE;
    RAISE EXCEPTION 'an enrollment of nobody was accepted';
EXCEPTION WHEN foreign_key_violation THEN
    PERFORM pg_catalog.nextval('soak.refused');
END $$;

-- Create a deleted user again, as the next generation.
CREATE FUNCTION soak.recreate(uid int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO soak.users (id, generation)
    SELECT uid, 1 + coalesce((SELECT max(d.generation) FROM soak.user_deleted d WHERE d.user_id = uid), 1)
     WHERE NOT EXISTS (SELECT FROM soak.users u WHERE u.id = uid)
    ON CONFLICT DO NOTHING;
    SELECT pg_catalog.nextval('soak.recreated');
$$;
