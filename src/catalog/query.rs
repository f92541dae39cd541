//! The one query builder: every SQL statement pg_softfk generates for a registration. Each
//! is a set-based statement over the parent's unique index, like core's own RI queries:
//! orphan rows are a `NOT EXISTS` anti-join, as `RI_Initial_Check` validates a new foreign
//! key. NULL keys are never orphans (MATCH SIMPLE). Identifiers come quoted from the
//! registry, the comparison uses the parent key's own btree equality operator by its
//! qualified name, functions and other operators are qualified with pg_catalog, so nothing
//! depends on search_path (callers pin it anyway: src/postgres/guc.rs).
//!
//! The builder only writes text; its `#[test]`s below pin the statements' shape.

use std::ffi::CStr;

use super::reference::{OnDelete, Reference};
use super::table::KeyLookup;

/// Keys travel as text: the capture writes them with these settings (sql/capture.sql), and
/// the purge reads them back with the same, whatever the session's: a timestamp key written
/// under `DateStyle = 'SQL, DMY'` still reads as the same instant, and floats as the
/// shortest text that reads back exactly (`extra_float_digits > 0`: with a session's
/// `extra_float_digits = -10`, `0.1234567890123` would be queued as `0.12346`). Pinned
/// wherever keys become text.
pub const KEY_TEXT_SETTINGS: [(&CStr, &str); 3] = [
    (c"datestyle", "ISO, YMD"),
    (c"intervalstyle", "postgres"),
    (c"extra_float_digits", "1"),
];

impl Reference {
    /// The orphans of this reference as a relation with four columns: `child_table` and
    /// `ctid` locate the child row (a partition's ctid alone is ambiguous), `key` is the
    /// dangling key and `child_row` the whole child row.
    pub fn orphan_rows_sql(&self) -> String {
        let key = self.child_key();
        format!(
            "SELECT c.tableoid AS child_table, c.ctid AS ctid, {key} AS key, c AS child_row \
               FROM {child} c \
              WHERE {key} IS NOT NULL AND {absent}",
            child = relation(&self.child_table, self.child_partitioned),
            absent = self.parent_absent(&key),
        )
    }

    /// The purge statements of one pass (src/purge/) over `leaf` (the child itself, or one
    /// leaf partition of it): apply the on_delete action to the rows holding one of the keys
    /// `$1` (text[]) whose parent row is absent. They run as the child's owner, who may not
    /// read the parent: `softfk.absent_keys` (src/purge/parent_check.rs, [`Reference::absent_keys_sql`])
    /// filters the keys as the extension's owner as the statement starts, under a snapshot
    /// no older than the statement's, so a key re-created before that snapshot is never
    /// purged. 'archive' returns the rows it deleted
    /// (key, row as jsonb). The caller bounds a statement by the number of keys it passes,
    /// and the first pass and the locking-first final pass also by `$2` (bigint) rows: one
    /// key can hold millions of rows (a bot account), and no statement may take minutes.
    ///
    /// A first pass chooses and locks at most `$2` rows `FOR UPDATE SKIP LOCKED` in a
    /// sub-select, then changes them by ctid: rows other transactions hold are left for the
    /// final pass, and so are rows changed by transactions that committed after the
    /// statement's snapshot (the lock returns the new version's ctid, which that snapshot does
    /// not see).
    ///
    /// The final pass joins the keys directly and waits for row locks itself. A wait is where
    /// a parent can come back: the transaction holding the row may re-create the parent key
    /// before it commits, and PostgreSQL's re-check of a row updated meanwhile (EvalPlanQual)
    /// re-evaluates the row's own conditions, not `absent_keys`, computed once under the
    /// statement's snapshot. The engine therefore asks `absent_keys` again after the
    /// statement (src/purge/); if a key came back, the batch is rolled back and its final
    /// pass runs locking first ([`Pass::FinalLockingFirst`]): `lock` takes at most `$2` rows
    /// (`FOR UPDATE`, waiting) and returns their ctids, and `act`, under a snapshot taken
    /// after every wait, changes those rows (`$2`, tid[]) whose key is still absent. Nobody
    /// can change a row between the two: we hold its lock. The plain final pass cannot be
    /// bounded (a row limit needs ctids, and a ctid chosen under the statement's snapshot
    /// misses a row updated meanwhile): a key known to hold many rows takes its final pass
    /// locking first.
    ///
    /// ```sql
    /// -- <keys with rows>: the keys `$1` that have a row in the leaf (only those are asked of
    /// -- the parent); in a leaf without an index on the key, (SELECT $1::pg_catalog.text[])
    /// ARRAY(SELECT q.key FROM unnest((SELECT $1::pg_catalog.text[])) AS q (key)
    ///        WHERE EXISTS (SELECT FROM ONLY app.enrollment c
    ///                       WHERE q.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id))
    /// -- final pass (cascade)
    /// DELETE FROM ONLY app.enrollment c
    ///  USING unnest(softfk.absent_keys(7, <keys with rows>)::pg_catalog.int4[]) AS k (key)
    ///  WHERE k.key OPERATOR(pg_catalog.=) c.user_id
    /// -- locking first: lock
    /// SELECT array_agg(l.ctid)::pg_catalog.text[] FROM (
    ///   SELECT c.ctid FROM unnest(softfk.absent_keys(7, <keys with rows>)::pg_catalog.int4[]) AS k (key)
    ///     JOIN ONLY app.enrollment c ON k.key OPERATOR(pg_catalog.=) c.user_id
    ///    LIMIT $2::pg_catalog.int8 FOR UPDATE OF c) l
    /// -- locking first: act
    /// DELETE FROM ONLY app.enrollment c
    ///  USING unnest(softfk.absent_keys(7, <keys with rows>)::pg_catalog.int4[]) AS k (key)
    ///  WHERE c.ctid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.tid[])
    ///    AND k.key OPERATOR(pg_catalog.=) c.user_id
    /// ```
    pub fn purge_sql(&self, leaf: &str, lookup: KeyLookup, pass: Pass) -> PurgeSql {
        let key = self.child_key();
        // The keys reach the query through a sub-select: given `$1` itself, which SPI passes
        // as a constant, the planner called the STABLE absent_keys while it estimated the join
        // (estimate_expression_value), so every statement ran the parent check twice, and it
        // costed the join for the exact number of keys: for 1,000 keys it hashed the whole
        // child, read once per statement, where 1,000 index probes were what the drain needed.
        // Hidden, the keys are estimated as a handful and the child is probed.
        let batch_keys = "(SELECT $1::pg_catalog.text[])";
        // Through an index, the parent is asked only about the keys that have a row in the
        // leaf: most keys of a batch have none in a given child (a user has rows in a few of
        // its ~170), and none at all in a final pass. Without one, finding those keys would
        // read the whole leaf (and aggregate its keys) before the statement reads it again.
        let keys = self.absent_keys_relation(&match lookup {
            KeyLookup::Index => self.keys_with_rows(leaf, batch_keys),
            KeyLookup::FullRead => batch_keys.to_string(),
        });
        let key_matches = format!("k.key OPERATOR({}) {key}", self.operator);
        match pass {
            Pass::First => PurgeSql::One(self.action_sql(
                leaf,
                "",
                &format!(
                    "c.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT c.ctid FROM {keys} JOIN ONLY {leaf} c ON {key_matches} \
                                          LIMIT $2::pg_catalog.int8 FOR UPDATE OF c SKIP LOCKED))"
                ),
            )),
            Pass::Final => PurgeSql::One(self.action_sql(leaf, &keys, &key_matches)),
            Pass::FinalLockingFirst => PurgeSql::LockThenAct {
                lock: format!(
                    "SELECT pg_catalog.array_agg(l.ctid)::pg_catalog.text[] FROM \
                       (SELECT c.ctid FROM {keys} JOIN ONLY {leaf} c ON {key_matches} \
                         LIMIT $2::pg_catalog.int8 FOR UPDATE OF c) l"
                ),
                act: self.action_sql(
                    leaf,
                    &keys,
                    &format!("c.ctid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.tid[]) AND {key_matches}"),
                ),
            },
        }
    }

    /// A pass over one block range of `leaf`, for a large backlog's keys
    /// (src/purge/scan.rs): the child is read in physical order, as a hand-written
    /// `DELETE ... USING` reads it, instead of probed key by key, so that each page is
    /// dirtied once. `lock` reads the blocks from `$2` to before `$3` (tid text, `(block,0)`),
    /// joins their rows to the keys `$1` (text[]) by hashing the keys, locks them
    /// `FOR UPDATE SKIP LOCKED` (rows others hold wait for the final pass, as in any first
    /// pass) and returns their ctids and their keys. `act` changes those of the locked rows
    /// (ctids `$2`) whose key, among `$1` (the keys `lock` returned), still has no parent,
    /// under a snapshot taken after the locks: the parent is asked only about keys found in
    /// the range. The final pass ([`Pass::Final`]) gives a whole leaf as the range (one
    /// snapshot: a row moved while it runs is seen in one version or the other, and a lock
    /// it waits for is followed to the row's new version) and waits for the rows others hold. The keys are joined, not compared with `= ANY`: the planner estimates
    /// `key = ANY (<50,000 keys>)` with one selectivity call per element, which cost more than
    /// the statement. They are a constant there (SPI passes parameters as constants), so that
    /// the planner knows how many they are and hashes: shown a handful, it probed the child's
    /// index once per key. The ctids reach `act` through a sub-select, for the same estimate.
    ///
    /// ```sql
    /// -- lock
    /// SELECT pg_catalog.array_agg(l.ctid)::pg_catalog.text[], pg_catalog.array_agg(DISTINCT l.key)
    ///   FROM (SELECT c.ctid, k.key
    ///           FROM ONLY app.enrollment c
    ///           JOIN pg_catalog.unnest($1::pg_catalog.text[]) AS k (key)
    ///             ON k.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id
    ///          WHERE c.ctid OPERATOR(pg_catalog.>=) $2::pg_catalog.tid
    ///            AND c.ctid OPERATOR(pg_catalog.<) $3::pg_catalog.tid
    ///            FOR UPDATE OF c SKIP LOCKED) l
    /// -- act (cascade)
    /// DELETE FROM ONLY app.enrollment c
    ///  USING pg_catalog.unnest(softfk.absent_keys(7, (SELECT $1::pg_catalog.text[]))::pg_catalog.int4[]) AS k (key)
    ///  WHERE c.ctid OPERATOR(pg_catalog.=) ANY ((SELECT $2::pg_catalog.tid[])::pg_catalog.tid[])
    ///    AND k.key OPERATOR(pg_catalog.=) c.user_id
    /// ```
    pub fn range_sql(&self, leaf: &str, pass: Pass) -> PurgeSql {
        let key = self.child_key();
        let op = &self.operator;
        let parent_type = &self.parent_type;
        let skip_locked = match pass {
            Pass::First => " SKIP LOCKED",
            Pass::Final | Pass::FinalLockingFirst => "",
        };
        PurgeSql::LockThenAct {
            lock: format!(
                "SELECT pg_catalog.array_agg(l.ctid)::pg_catalog.text[], pg_catalog.array_agg(DISTINCT l.key) \
                   FROM (SELECT c.ctid, k.key FROM ONLY {leaf} c \
                           JOIN pg_catalog.unnest($1::pg_catalog.text[]) AS k (key) \
                             ON k.key::{parent_type} OPERATOR({op}) {key} \
                          WHERE c.ctid OPERATOR(pg_catalog.>=) $2::pg_catalog.tid \
                            AND c.ctid OPERATOR(pg_catalog.<) $3::pg_catalog.tid \
                            FOR UPDATE OF c{skip_locked}) l"
            ),
            act: self.action_sql(
                leaf,
                &self.absent_keys_relation("(SELECT $1::pg_catalog.text[])"),
                &format!(
                    "c.ctid OPERATOR(pg_catalog.=) ANY ((SELECT $2::pg_catalog.tid[])::pg_catalog.tid[]) AND k.key OPERATOR({op}) {key}"
                ),
            ),
        }
    }

    /// The keys of `keys` (a text[] expression) that have no parent row, as the FROM item
    /// `k (key)` of the parent key's type: `softfk.absent_keys` reads the parent as the
    /// extension's owner.
    fn absent_keys_relation(&self, keys: &str) -> String {
        format!(
            "pg_catalog.unnest(softfk.absent_keys({id}, {keys})::{parent_type}[]) AS k (key)",
            id = self.id,
            parent_type = self.parent_type,
        )
    }

    /// The on_delete action on the rows of `leaf` (alias `c`) that meet `condition`, joined
    /// to `using` (a FROM item, or empty).
    fn action_sql(&self, leaf: &str, using: &str, condition: &str) -> String {
        let column = &self.child_column_quoted;
        let (delete_using, update_from) = if using.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("USING {using}"), format!("FROM {using}"))
        };
        match self.on_delete {
            OnDelete::Cascade => format!("DELETE FROM ONLY {leaf} c {delete_using} WHERE {condition}"),
            // One row: the rows changed, and how many of them still hold one of the keys `$1`
            // (a BEFORE UPDATE trigger that keeps the key): a purge that would come back to
            // them for ever reports them instead. A trigger that sets another key is fine.
            OnDelete::SetNull => format!(
                "WITH changed AS (UPDATE ONLY {leaf} c SET {column} = NULL {update_from} WHERE {condition} \
                                  RETURNING {key} OPERATOR({op}) ANY ($1::pg_catalog.text[]::{parent_type}[]) AS kept) \
                 SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE kept) FROM changed",
                key = self.child_key(),
                op = self.operator,
                parent_type = self.parent_type,
            ),
            // The rows go to the archive in a second statement, as the extension's owner.
            OnDelete::Archive => format!(
                "DELETE FROM ONLY {leaf} c {delete_using} WHERE {condition} \
                 RETURNING pg_catalog.format('%s', c.{column}), pg_catalog.to_jsonb(c)::pg_catalog.text"
            ),
            OnDelete::NoAction => unreachable!("on_delete 'no action' has no purge statement"),
        }
    }

    /// Which of the keys `$1` (text[], read as the parent key's type) have no parent row:
    /// the filter inside every purge statement, as text[].
    pub fn absent_keys_sql(&self) -> String {
        format!(
            "SELECT pg_catalog.array_agg(k.key) FROM pg_catalog.unnest($1::pg_catalog.text[]) AS k (key) \
              WHERE {absent}",
            absent = self.parent_absent(&format!("k.key::{}", self.parent_type)),
        )
    }

    /// At most `$1` distinct orphan keys in `leaf` (after a TRUNCATE of the parent, or in a
    /// sweep), as the parent key's text: the report's anti-join on one leaf.
    pub fn orphan_keys_sql(&self, leaf: &str) -> String {
        let key = self.child_key();
        format!(
            "SELECT pg_catalog.array_agg(o.key) FROM \
               (SELECT DISTINCT pg_catalog.format('%s', {key}) AS key FROM ONLY {leaf} c \
                 WHERE {key} IS NOT NULL AND {absent} LIMIT $1) o",
            absent = self.parent_absent(&key),
        )
    }

    /// `NOT EXISTS` a parent row whose key equals `key` (an expression of the child's type).
    fn parent_absent(&self, key: &str) -> String {
        format!(
            "NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{parent_column} OPERATOR({op}) {key})",
            parent = relation(&self.parent_table, self.parent_partitioned),
            parent_column = &self.parent_column_quoted,
            op = self.operator,
        )
    }

    /// The child key as compared with the parent key (cast when the types differ).
    fn child_key(&self) -> String {
        let column = format!("c.{}", self.child_column_quoted);
        match &self.child_cast {
            Some(cast) => format!("({column})::{cast}"),
            None => column,
        }
    }

    /// Which of the keys `$1` (text[], read as the parent key's type) still have a row in
    /// `leaf`, as text[]: after a first-pass statement reached its row limit, the keys with
    /// more to purge.
    pub fn keys_with_rows_sql(&self, leaf: &str) -> String {
        format!(
            "SELECT {}",
            self.keys_with_rows(leaf, "$1::pg_catalog.text[]")
        )
    }

    /// The keys of `keys` (a text[] expression, read as the parent key's type) that have a
    /// row in `leaf`, as an `ARRAY(...)` of the same text.
    fn keys_with_rows(&self, leaf: &str, keys: &str) -> String {
        format!(
            "ARRAY(SELECT q.key FROM pg_catalog.unnest({keys}) AS q (key) \
                    WHERE EXISTS (SELECT FROM ONLY {leaf} c WHERE q.key::{parent_type} OPERATOR({op}) {key}))",
            parent_type = self.parent_type,
            op = self.operator,
            key = self.child_key(),
        )
    }

    /// One row of `orphan_report()`: counts and the first ten distinct orphan keys.
    pub fn report_sql(&self) -> String {
        format!(
            "SELECT pg_catalog.count(*), pg_catalog.count(DISTINCT o.key), \
                    ((pg_catalog.array_agg(DISTINCT o.key ORDER BY o.key))[1:10])::pg_catalog.text[] \
               FROM ({orphans}) o",
            orphans = self.orphan_rows_sql(),
        )
    }
}

/// Which statements a purge pass runs ([`Reference::purge_sql`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Skips rows others hold.
    First,
    /// Waits for rows others hold.
    Final,
    /// The final pass of a batch in which a parent key came back while it ran: every row is
    /// locked first and judged under a snapshot taken after the locks.
    FinalLockingFirst,
}

/// The statements of one purge pass over one leaf ([`Reference::purge_sql`]).
pub enum PurgeSql {
    /// Changes the rows of keys `$1` whose parent is absent.
    One(String),
    /// `lock` locks the rows of keys `$1`, waiting, and returns their ctids (text[]); `act`
    /// changes those of the ctids `$2` whose key is still absent. (A range pass's `lock`
    /// returns their keys too, which its `act` takes as `$1`.)
    LockThenAct { lock: String, act: String },
}

/// A partitioned table is read with its partitions; a plain one with `ONLY`, as core's RI
/// queries do (a foreign key is not inherited by inheritance children).
fn relation(qualified_name: &str, partitioned: bool) -> String {
    if partitioned {
        qualified_name.to_string()
    } else {
        format!("ONLY {qualified_name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrx::pg_sys::Oid;

    /// enrollment.user_id -> users.id, int4 on both sides, reference 7.
    fn enrollment(on_delete: OnDelete) -> Reference {
        Reference {
            id: 7,
            on_delete,
            child_table: "app.enrollment".into(),
            child_partitioned: false,
            child_column: "user_id".into(),
            child_column_quoted: "user_id".into(),
            parent_table: "app.users".into(),
            parent_partitioned: false,
            parent_column: "id".into(),
            parent_column_quoted: "id".into(),
            parent_type: "pg_catalog.int4".into(),
            operator: "pg_catalog.=".into(),
            child_cast: None,
            child_oid: Oid::from(16400),
            parent_oid: Oid::from(16390),
        }
    }

    /// Whitespace collapsed, so that expectations can be written over several lines.
    fn normalized(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn one(sql: PurgeSql) -> String {
        match sql {
            PurgeSql::One(statement) => normalized(&statement),
            PurgeSql::LockThenAct { .. } => panic!("expected one statement"),
        }
    }

    #[test]
    fn orphan_rows_are_an_anti_join_on_the_parent_key_skipping_null_keys() {
        assert_eq!(
            normalized(&enrollment(OnDelete::Cascade).orphan_rows_sql()),
            normalized(
                "SELECT c.tableoid AS child_table, c.ctid AS ctid, c.user_id AS key, c AS child_row
                   FROM ONLY app.enrollment c
                  WHERE c.user_id IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM ONLY app.users p
                                     WHERE p.id OPERATOR(pg_catalog.=) c.user_id)"
            )
        );
    }

    #[test]
    fn partitioned_tables_are_read_with_their_partitions_and_plain_ones_only_themselves() {
        let mut reference = enrollment(OnDelete::Cascade);
        reference.child_partitioned = true;
        reference.parent_partitioned = true;
        let sql = normalized(&reference.orphan_rows_sql());
        assert!(sql.contains("FROM app.enrollment c"), "{sql}");
        assert!(sql.contains("FROM app.users p"), "{sql}");
        assert!(!sql.contains("ONLY"), "{sql}");
    }

    #[test]
    fn a_child_key_of_another_type_is_cast_before_it_is_compared() {
        let mut reference = enrollment(OnDelete::Cascade);
        reference.child_cast = Some("pg_catalog.text".into());
        reference.operator = "pg_catalog.=".into();
        let sql = normalized(&reference.orphan_rows_sql());
        assert!(
            sql.contains("WHERE (c.user_id)::pg_catalog.text IS NOT NULL"),
            "{sql}"
        );
        assert!(
            sql.contains("p.id OPERATOR(pg_catalog.=) (c.user_id)::pg_catalog.text"),
            "{sql}"
        );
    }

    #[test]
    fn identifiers_go_into_the_sql_as_the_registry_quoted_them() {
        let mut reference = enrollment(OnDelete::Cascade);
        reference.child_table = r#""App"."Enrollment""#.into();
        reference.child_column = "User Id".into();
        reference.child_column_quoted = r#""User Id""#.into();
        let sql = normalized(&reference.orphan_rows_sql());
        assert!(sql.contains(r#"FROM ONLY "App"."Enrollment" c"#), "{sql}");
        assert!(sql.contains(r#"c."User Id" IS NOT NULL"#), "{sql}");
    }

    #[test]
    fn a_first_pass_skips_rows_others_hold_and_changes_at_most_2_dollar_rows_by_ctid() {
        let sql = one(enrollment(OnDelete::Cascade).purge_sql(
            "app.enrollment",
            KeyLookup::Index,
            Pass::First,
        ));
        assert_eq!(
            sql,
            normalized(
                "DELETE FROM ONLY app.enrollment c
                  WHERE c.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT c.ctid
                          FROM pg_catalog.unnest(softfk.absent_keys(7, ARRAY(SELECT q.key FROM pg_catalog.unnest((SELECT $1::pg_catalog.text[])) AS q (key)
                                   WHERE EXISTS (SELECT FROM ONLY app.enrollment c
                                                  WHERE q.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id)))::pg_catalog.int4[]) AS k (key)
                          JOIN ONLY app.enrollment c ON k.key OPERATOR(pg_catalog.=) c.user_id
                         LIMIT $2::pg_catalog.int8 FOR UPDATE OF c SKIP LOCKED))"
            )
        );
    }

    #[test]
    fn without_an_index_on_the_key_the_parent_is_asked_about_every_key_of_the_batch() {
        let sql = one(enrollment(OnDelete::Cascade).purge_sql(
            "app.enrollment",
            KeyLookup::FullRead,
            Pass::Final,
        ));
        assert_eq!(
            sql,
            normalized(
                "DELETE FROM ONLY app.enrollment c
                  USING pg_catalog.unnest(softfk.absent_keys(7, (SELECT $1::pg_catalog.text[]))::pg_catalog.int4[]) AS k (key)
                  WHERE k.key OPERATOR(pg_catalog.=) c.user_id"
            )
        );
    }

    #[test]
    fn a_final_pass_joins_the_absent_keys_and_waits_for_row_locks() {
        let sql = one(enrollment(OnDelete::Cascade).purge_sql(
            "app.enrollment",
            KeyLookup::Index,
            Pass::Final,
        ));
        assert_eq!(
            sql,
            normalized(
                "DELETE FROM ONLY app.enrollment c
                  USING pg_catalog.unnest(softfk.absent_keys(7, ARRAY(SELECT q.key FROM pg_catalog.unnest((SELECT $1::pg_catalog.text[])) AS q (key)
                                   WHERE EXISTS (SELECT FROM ONLY app.enrollment c
                                                  WHERE q.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id)))::pg_catalog.int4[]) AS k (key)
                  WHERE k.key OPERATOR(pg_catalog.=) c.user_id"
            )
        );
        assert!(!sql.contains("SKIP LOCKED"));
    }

    #[test]
    fn a_final_pass_locking_first_locks_at_most_2_dollar_rows_then_acts_on_those_still_orphaned() {
        let PurgeSql::LockThenAct { lock, act } = enrollment(OnDelete::Cascade).purge_sql(
            "app.enrollment",
            KeyLookup::Index,
            Pass::FinalLockingFirst,
        ) else {
            panic!("expected lock-then-act");
        };
        assert_eq!(
            normalized(&lock),
            normalized(
                "SELECT pg_catalog.array_agg(l.ctid)::pg_catalog.text[] FROM
                   (SELECT c.ctid
                      FROM pg_catalog.unnest(softfk.absent_keys(7, ARRAY(SELECT q.key FROM pg_catalog.unnest((SELECT $1::pg_catalog.text[])) AS q (key)
                                   WHERE EXISTS (SELECT FROM ONLY app.enrollment c
                                                  WHERE q.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id)))::pg_catalog.int4[]) AS k (key)
                      JOIN ONLY app.enrollment c ON k.key OPERATOR(pg_catalog.=) c.user_id
                     LIMIT $2::pg_catalog.int8 FOR UPDATE OF c) l"
            )
        );
        assert_eq!(
            normalized(&act),
            normalized(
                "DELETE FROM ONLY app.enrollment c
                  USING pg_catalog.unnest(softfk.absent_keys(7, ARRAY(SELECT q.key FROM pg_catalog.unnest((SELECT $1::pg_catalog.text[])) AS q (key)
                                   WHERE EXISTS (SELECT FROM ONLY app.enrollment c
                                                  WHERE q.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id)))::pg_catalog.int4[]) AS k (key)
                  WHERE c.ctid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.tid[])
                    AND k.key OPERATOR(pg_catalog.=) c.user_id"
            )
        );
    }

    #[test]
    fn a_range_pass_locks_the_range_rows_of_hashed_keys_then_acts_on_those_still_orphaned() {
        let PurgeSql::LockThenAct { lock, act } =
            enrollment(OnDelete::Cascade).range_sql("app.enrollment", Pass::First)
        else {
            panic!("expected lock-then-act");
        };
        assert_eq!(
            normalized(&lock),
            normalized(
                "SELECT pg_catalog.array_agg(l.ctid)::pg_catalog.text[], pg_catalog.array_agg(DISTINCT l.key)
                   FROM (SELECT c.ctid, k.key
                           FROM ONLY app.enrollment c
                           JOIN pg_catalog.unnest($1::pg_catalog.text[]) AS k (key)
                             ON k.key::pg_catalog.int4 OPERATOR(pg_catalog.=) c.user_id
                          WHERE c.ctid OPERATOR(pg_catalog.>=) $2::pg_catalog.tid
                            AND c.ctid OPERATOR(pg_catalog.<) $3::pg_catalog.tid
                            FOR UPDATE OF c SKIP LOCKED) l"
            )
        );
        assert_eq!(
            normalized(&act),
            normalized(
                "DELETE FROM ONLY app.enrollment c
                  USING pg_catalog.unnest(softfk.absent_keys(7, (SELECT $1::pg_catalog.text[]))::pg_catalog.int4[]) AS k (key)
                  WHERE c.ctid OPERATOR(pg_catalog.=) ANY ((SELECT $2::pg_catalog.tid[])::pg_catalog.tid[])
                    AND k.key OPERATOR(pg_catalog.=) c.user_id"
            )
        );
    }

    #[test]
    fn a_final_range_pass_waits_for_the_rows_others_hold() {
        let PurgeSql::LockThenAct { lock, .. } =
            enrollment(OnDelete::Cascade).range_sql("app.enrollment", Pass::Final)
        else {
            panic!("expected lock-then-act");
        };
        assert!(normalized(&lock).ends_with("FOR UPDATE OF c) l"), "{lock}");
    }

    #[test]
    fn set_null_updates_the_key_column_and_archive_returns_what_it_deleted() {
        let set_null = one(enrollment(OnDelete::SetNull).purge_sql(
            "app.enrollment",
            KeyLookup::Index,
            Pass::Final,
        ));
        assert!(
            set_null.starts_with(
                "WITH changed AS (UPDATE ONLY app.enrollment c SET user_id = NULL FROM pg_catalog.unnest("
            ),
            "{set_null}"
        );
        assert!(
            set_null.ends_with(
                "RETURNING c.user_id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]::pg_catalog.int4[]) AS kept) \
                 SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE kept) FROM changed"
            ),
            "{set_null}"
        );
        let archive = one(enrollment(OnDelete::Archive).purge_sql(
            "app.enrollment",
            KeyLookup::Index,
            Pass::Final,
        ));
        assert!(
            archive.starts_with("DELETE FROM ONLY app.enrollment c USING"),
            "{archive}"
        );
        assert!(
            archive.ends_with(
                "RETURNING pg_catalog.format('%s', c.user_id), pg_catalog.to_jsonb(c)::pg_catalog.text"
            ),
            "{archive}"
        );
    }

    #[test]
    fn each_leaf_of_a_partitioned_child_is_purged_on_its_own() {
        let mut reference = enrollment(OnDelete::Cascade);
        reference.child_partitioned = true;
        let sql = one(reference.purge_sql("app.enrollment_2026", KeyLookup::Index, Pass::Final));
        assert!(
            sql.starts_with("DELETE FROM ONLY app.enrollment_2026 c"),
            "{sql}"
        );
    }

    #[test]
    #[should_panic(expected = "no purge statement")]
    fn no_action_has_no_purge_statement() {
        enrollment(OnDelete::NoAction).purge_sql("app.enrollment", KeyLookup::Index, Pass::Final);
    }

    #[test]
    fn absent_keys_reads_the_text_keys_as_the_parent_key_type() {
        assert_eq!(
            normalized(&enrollment(OnDelete::Cascade).absent_keys_sql()),
            normalized(
                "SELECT pg_catalog.array_agg(k.key)
                   FROM pg_catalog.unnest($1::pg_catalog.text[]) AS k (key)
                  WHERE NOT EXISTS (SELECT 1 FROM ONLY app.users p
                                     WHERE p.id OPERATOR(pg_catalog.=) k.key::pg_catalog.int4)"
            )
        );
    }

    #[test]
    fn orphan_keys_of_one_leaf_are_distinct_text_and_bounded() {
        let sql = normalized(&enrollment(OnDelete::Cascade).orphan_keys_sql("app.enrollment"));
        assert!(
            sql.starts_with("SELECT pg_catalog.array_agg(o.key) FROM (SELECT DISTINCT pg_catalog.format('%s', c.user_id) AS key FROM ONLY app.enrollment c"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT $1) o"), "{sql}");
    }
}
