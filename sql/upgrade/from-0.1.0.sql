-- pg_softfk 0.1.0 -> 0.2.0, first part. The installer (script/lib.sh, install_extension)
-- appends sql/adopt.sql, which defines the adopt / discover / revert functions anew, and
-- installs the result as pg_softfk--0.1.0--0.2.0.sql. tests/tap/009_upgrade.pl checks that
-- an updated database has exactly the objects of a fresh 0.2.0 install.

-- adopt.sql, appended below, creates these again (softfk_discover gained a column, and the
-- name patterns of softfk.looks_like_reference moved into it).
DROP FUNCTION softfk_discover(regclass);
DROP FUNCTION softfk.looks_like_reference(name, regclass);
DROP FUNCTION softfk_adopt(regclass, name);

-- The API's C functions pin search_path (sql/api.sql).
ALTER FUNCTION softfk_add(regclass, name, regclass, name, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_alter(regclass, name, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_drop(regclass, name) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION orphan_report() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk.orphan_rows_query(regclass, name) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_purge() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION softfk_restore(regclass, text) SET search_path = pg_catalog, pg_temp;

-- Long trigger names end with an md5 tag (sql/check.sql). Existing triggers keep their names:
-- pg_softfk finds its triggers by function and arguments.
CREATE OR REPLACE FUNCTION softfk.trigger_name(tab regclass, column_name name, suffix text)
RETURNS name LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    base text := (SELECT relname FROM pg_class WHERE oid = tab) || '_' || column_name;
    tag text;
BEGIN
    IF octet_length(base) + octet_length(suffix) <= 63 THEN
        RETURN base || suffix;
    END IF;
    tag := '_' || left(md5(base), 8) || CASE WHEN suffix LIKE '\_%' THEN '' ELSE '_' END;
    WHILE octet_length(base) > 63 - octet_length(suffix) - octet_length(tag) LOOP
        base := left(base, -1);
    END LOOP;
    RETURN base || tag || suffix;
END $$;

-- sql/adopt.sql follows.
