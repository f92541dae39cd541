//! In-database tests (`cargo pgrx test`): on every key shape we support, the query builder
//! finds exactly what a plain hand-written `NOT EXISTS` finds, on seeded random data with
//! NULLs, duplicates and orphans mixed in; and the C enum value pgrx does not bind is right
//! on the major under test.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .expect(sql)
            .expect("a non-NULL result")
    }

    /// Registers `child.column -> parent.parent_column` and compares orphan_report() and
    /// orphan_rows() with the hand-written anti-join (child, parent given as SQL names).
    fn assert_matches_not_exists(child: &str, column: &str, parent: &str, parent_column: &str) {
        let child_lit = child.replace('\'', "''");
        let column_lit = column.replace('\'', "''");
        Spi::run(&format!(
            "SELECT softfk_add('{child_lit}', '{column_lit}', '{}', '{}')",
            parent.replace('\'', "''"),
            parent_column.replace('\'', "''"),
        ))
        .unwrap();
        let col = format!("\"{}\"", column.replace('"', "\"\""));
        let pcol = format!("\"{}\"", parent_column.replace('"', "\"\""));
        let hand_written = format!(
            "SELECT c.{col} AS key FROM {child} c
              WHERE c.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{pcol} = c.{col})"
        );
        let expected_rows: i64 = one(&format!("SELECT count(*) FROM ({hand_written}) o"));
        let expected_keys: i64 = one(&format!(
            "SELECT count(DISTINCT key) FROM ({hand_written}) o"
        ));
        let expected_sample: String = one(&format!(
            "SELECT coalesce(array_agg(key ORDER BY key)::text, '{{}}')
               FROM (SELECT DISTINCT key FROM ({hand_written}) o ORDER BY key LIMIT 10) s"
        ));
        let expected_examined: i64 = one(&format!("SELECT count({col}) FROM {child}"));
        assert!(expected_rows > 0, "the fixture plants orphans in {child}");

        let report = format!("FROM orphan_report() WHERE child = '{child_lit}'::regclass AND child_column = '{column_lit}'");
        assert_eq!(
            one::<i64>(&format!("SELECT orphan_rows {report}")),
            expected_rows
        );
        assert_eq!(
            one::<i64>(&format!("SELECT orphan_keys {report}")),
            expected_keys
        );
        assert_eq!(
            one::<String>(&format!("SELECT sample_keys::text {report}")),
            expected_sample
        );
        assert_eq!(
            one::<i64>(&format!("SELECT rows_examined {report}")),
            expected_examined
        );

        // orphan_rows(): the same multiset of keys, and each (table, ctid) leads to a row with
        // that key.
        let rows = format!("orphan_rows('{child_lit}', '{column_lit}')");
        let mismatched: i64 = one(&format!(
            "SELECT count(*) FROM (
                (SELECT key::text FROM ({hand_written}) o EXCEPT ALL SELECT key FROM {rows})
                UNION ALL
                (SELECT key FROM {rows} EXCEPT ALL SELECT key::text FROM ({hand_written}) o)) diff"
        ));
        assert_eq!(
            mismatched, 0,
            "orphan_rows() differs from NOT EXISTS on {child}"
        );
        let misdirected: i64 = one(&format!(
            "SELECT count(*) FROM {rows} o JOIN {child} c ON c.tableoid = o.child_table AND c.ctid = o.ctid
              WHERE c.{col}::text IS DISTINCT FROM o.key"
        ));
        assert_eq!(misdirected, 0);
    }

    /// 2,000 users, of which every 7th is deleted afterwards; 10,000 child rows of which 5% have
    /// a NULL key and some point beyond the table.
    fn users_and_children(key_type: &str, child_type: &str, nullable: &str) {
        Spi::run(&format!(
            "SELECT setseed(0.42);
             CREATE TABLE users (id {key_type} PRIMARY KEY, name text);
             INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 2000) g;
             CREATE TABLE child (id serial PRIMARY KEY, user_id {child_type} {nullable});
             INSERT INTO child (user_id)
                  SELECT CASE WHEN random() < 0.05 AND '{nullable}' = '' THEN NULL
                              ELSE (1 + floor(random() * 2100))::{child_type} END
                    FROM generate_series(1, 10000);
             DELETE FROM users WHERE id % 7 = 0;"
        ))
        .unwrap();
    }

    #[pg_test]
    fn int4_keys() {
        users_and_children("int", "int", "");
        assert_matches_not_exists("child", "user_id", "users", "id");
    }

    #[pg_test]
    fn int8_keys_not_null() {
        users_and_children("bigint", "bigint", "NOT NULL");
        assert_matches_not_exists("child", "user_id", "users", "id");
    }

    #[pg_test]
    fn child_key_narrower_than_parent_key() {
        users_and_children("bigint", "smallint", "");
        assert_matches_not_exists("child", "user_id", "users", "id");
    }

    #[pg_test]
    fn child_key_wider_than_parent_key() {
        users_and_children("int", "bigint", "");
        assert_matches_not_exists("child", "user_id", "users", "id");
    }

    #[pg_test]
    fn numeric_parent_compared_through_an_implicit_cast() {
        users_and_children("numeric", "int", "");
        assert_matches_not_exists("child", "user_id", "users", "id");
    }

    #[pg_test]
    fn varchar_child_of_a_text_key() {
        Spi::run(
            "SELECT setseed(0.7);
             CREATE TABLE accounts (login text PRIMARY KEY);
             INSERT INTO accounts SELECT 'user' || g FROM generate_series(1, 500) g;
             CREATE TABLE posts (id serial PRIMARY KEY, login varchar(40));
             INSERT INTO posts (login) SELECT CASE WHEN random() < 0.1 THEN NULL
                                                  ELSE 'user' || (1 + floor(random() * 550)) END
                                         FROM generate_series(1, 3000);",
        )
        .unwrap();
        assert_matches_not_exists("posts", "login", "accounts", "login");
    }

    #[pg_test]
    fn uuid_keys_on_a_unique_non_primary_column() {
        Spi::run(
            "CREATE TABLE people (id serial PRIMARY KEY, external_key uuid UNIQUE);
             INSERT INTO people (external_key) SELECT md5(g::text)::uuid FROM generate_series(1, 300) g;
             CREATE TABLE badges (id serial PRIMARY KEY, holder uuid);
             INSERT INTO badges (holder) SELECT md5((g % 320)::text)::uuid FROM generate_series(1, 1000) g;
             INSERT INTO badges (holder) VALUES (NULL);",
        )
        .unwrap();
        assert_matches_not_exists("badges", "holder", "people", "external_key");
    }

    #[pg_test]
    fn quoted_mixed_case_names_in_another_schema() {
        Spi::run(
            "CREATE SCHEMA \"Edx Data\";
             CREATE TABLE \"Edx Data\".\"Auth\"\"User\" (\"Id\" int PRIMARY KEY);
             INSERT INTO \"Edx Data\".\"Auth\"\"User\" SELECT g FROM generate_series(1, 100) g;
             CREATE TABLE \"Edx Data\".\"Student Module\" (id serial PRIMARY KEY, \"Student Id\" int);
             INSERT INTO \"Edx Data\".\"Student Module\" (\"Student Id\")
                  SELECT g % 130 FROM generate_series(1, 1000) g;",
        )
        .unwrap();
        assert_matches_not_exists(
            "\"Edx Data\".\"Student Module\"",
            "Student Id",
            "\"Edx Data\".\"Auth\"\"User\"",
            "Id",
        );
    }

    #[pg_test]
    fn partitioned_child() {
        Spi::run(
            "CREATE TABLE users (id int PRIMARY KEY);
             INSERT INTO users SELECT g FROM generate_series(1, 100) g;
             CREATE TABLE grades (id int, user_id int, term int) PARTITION BY LIST (term);
             CREATE TABLE grades_1 PARTITION OF grades FOR VALUES IN (1);
             CREATE TABLE grades_2 PARTITION OF grades FOR VALUES IN (2);
             INSERT INTO grades SELECT g, g % 120, 1 + g % 2 FROM generate_series(1, 1000) g;",
        )
        .unwrap();
        assert_matches_not_exists("grades", "user_id", "users", "id");
    }

    #[pg_test]
    fn no_orphans_means_zero_rows_and_an_empty_sample() {
        users_and_children("int", "int", "");
        Spi::run("DELETE FROM child WHERE user_id NOT IN (SELECT id FROM users)").unwrap();
        Spi::run("SELECT softfk_add('child', 'user_id', 'users')").unwrap();
        assert_eq!(one::<i64>("SELECT orphan_rows FROM orphan_report()"), 0);
        assert_eq!(
            one::<String>("SELECT sample_keys::text FROM orphan_report()"),
            "{}"
        );
    }

    /// rows_examined comes from the anti-join's own scan of the child; when that scan is
    /// split among parallel workers, every worker's rows count.
    #[pg_test]
    fn rows_examined_includes_parallel_workers() {
        users_and_children("int", "int", "");
        Spi::run(
            "CREATE FUNCTION pg_temp.explain_orphans() RETURNS SETOF text LANGUAGE plpgsql AS $$
             BEGIN
                 RETURN QUERY EXECUTE 'EXPLAIN SELECT count(*) FROM ('
                     || softfk.orphan_rows_query('child', 'user_id') || ') o';
             END $$;",
        )
        .unwrap();
        Spi::run(
            "INSERT INTO child (user_id) SELECT 1 + g % 2100 FROM generate_series(1, 200000) g;
             ANALYZE child; ANALYZE users;
             SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2;",
        )
        .unwrap();
        Spi::run("SELECT softfk_add('child', 'user_id', 'users')").unwrap();
        let plan: String = one(
            "SELECT string_agg(line, E'\\n') FROM (SELECT * FROM pg_temp.explain_orphans()) e(line)",
        );
        assert!(
            plan.contains("Gather"),
            "the anti-join runs in parallel:\n{plan}"
        );
        assert_eq!(
            one::<i64>("SELECT rows_examined FROM orphan_report()"),
            one::<i64>("SELECT count(user_id) FROM child")
        );
    }

    /// The purge worker arms core's statement timeout by its id (utils/timeout.h, which
    /// pgrx does not bind): a wrong id would cancel with another timeout's message, or none.
    #[pg_test(error = "canceling statement due to statement timeout")]
    fn statement_timeout_id_is_statement_timeout() {
        let _armed = crate::postgres::timeout::StatementTimeout::arm(10);
        Spi::run("SELECT pg_sleep(5)").unwrap();
    }
}
