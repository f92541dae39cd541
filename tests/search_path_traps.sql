-- Traps for the search_path (tests/pg_regress/sql/security.sql, tests/tap/003_purge_worker.pl):
-- functions and operators in schema "trap" that match the calls pg_softfk's queries make
-- better than the built-in ones do (an exact argument type where the built-in needs an
-- implicit cast). Each records whom it ran as in trap.ran_as. With "trap" first on a
-- search_path, pg_softfk must never call one: it pins its own search_path.
-- The schema "trap" must exist, usable by everyone.
CREATE TABLE trap.ran_as (who name);
GRANT INSERT ON trap.ran_as TO PUBLIC;
CREATE FUNCTION trap.record() RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO trap.ran_as VALUES (current_user) RETURNING true $$;
CREATE FUNCTION trap.format(text, name, name) RETURNS text LANGUAGE sql
    AS $$ SELECT trap.record(); SELECT pg_catalog.format($1, $2, $3) $$;
CREATE FUNCTION trap.format_type(oid, int) RETURNS text LANGUAGE sql
    AS $$ SELECT trap.record(); SELECT pg_catalog.format_type($1, $2) $$;
CREATE FUNCTION trap.regclass_is(regclass, oid) RETURNS boolean LANGUAGE sql
    AS $$ SELECT trap.record(); SELECT $1::oid OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR trap.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = trap.regclass_is);
CREATE FUNCTION trap.tid_is(tid, tid) RETURNS boolean LANGUAGE sql
    AS $$ SELECT trap.record(); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR trap.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = trap.tid_is);
CREATE FUNCTION trap.count(text) RETURNS bigint LANGUAGE sql
    AS $$ SELECT trap.record(); SELECT 1::bigint $$;
