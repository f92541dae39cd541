//! Finding orphans: child rows whose non-NULL key has no parent row.
//!
//! This module holds the one query builder. Every orphan query (the report, row inspection,
//! and later the purge and the sweep) is a set-based anti-join built by
//! [`Reference::orphan_rows_sql`]: `NOT EXISTS` over the parent's unique index, as core's
//! `RI_Initial_Check` does when it validates a new foreign key. NULL keys are never orphans
//! (MATCH SIMPLE). Identifiers come quoted from the registry, the comparison uses the parent
//! key's own btree equality operator by its qualified name, functions and other operators are
//! qualified with pg_catalog, so nothing depends on search_path (the SQL API and the worker
//! pin it anyway: src/settings.rs).

use std::ffi::CStr;
use std::time::Instant;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;

use crate::error::{notice, required, warning};
use crate::registry::{self, OnDelete, Reference};
use crate::scan_count;
use crate::settings::with_settings;

/// pg_softfk.orphans_on_add: whether softfk_add counts the orphans a column already has.
pub static ORPHANS_ON_ADD: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn define_settings() {
    GucRegistry::define_bool_guc(
        c"pg_softfk.orphans_on_add",
        c"Whether softfk_add counts the orphans a column already has.",
        c"One scan of the child table, reported as a NOTICE; skipped when a validated foreign key \
          covers the column. Turn it off to register a column of a very large table at once.",
        &ORPHANS_ON_ADD,
        GucContext::Userset,
        GucFlags::default(),
    );
}

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

    /// The purge statements of one pass (src/purge.rs) over `leaf` (the child itself, or one
    /// leaf partition of it): apply the on_delete action to the rows holding one of the keys
    /// `$1` (text[]) whose parent row is absent. They run as the child's owner, who may not
    /// read the parent: `softfk.absent_keys` (src/purge.rs, [`Reference::absent_keys_sql`])
    /// filters the keys as the extension's owner under the statement's own snapshot, so a key
    /// re-created before that snapshot is never purged. 'archive' returns the rows it deleted
    /// (key, row as jsonb). The caller bounds a statement by the number of keys it passes.
    ///
    /// A first pass chooses and locks the rows `FOR UPDATE SKIP LOCKED` in a sub-select, then
    /// changes them by ctid: rows other transactions hold are left for the final pass, and so
    /// are rows changed by transactions that committed after the statement's snapshot (the
    /// lock returns the new version's ctid, which that snapshot does not see).
    ///
    /// The final pass joins the keys directly and waits for row locks itself. A wait is where
    /// a parent can come back: the transaction holding the row may re-create the parent key
    /// before it commits, and PostgreSQL's re-check of a row updated meanwhile (EvalPlanQual)
    /// re-evaluates the row's own conditions, not `absent_keys`, computed once under the
    /// statement's snapshot. The engine therefore asks `absent_keys` again after the
    /// statement (src/purge.rs); if a key came back, the batch is rolled back and its final
    /// pass runs locking first ([`Pass::FinalLockingFirst`]): `lock` takes the rows
    /// (`FOR UPDATE`, waiting) and returns their ctids, and `act`, under a snapshot taken
    /// after every wait, changes those rows (`$2`, tid[]) whose key is still absent. Nobody
    /// can change a row between the two: we hold its lock.
    ///
    /// ```sql
    /// -- final pass (cascade)
    /// DELETE FROM ONLY app.enrollment c
    ///  USING unnest(softfk.absent_keys(7, $1)::pg_catalog.int4[]) AS k (key)
    ///  WHERE k.key OPERATOR(pg_catalog.=) c.user_id
    /// -- locking first: lock
    /// SELECT array_agg(l.ctid)::pg_catalog.text[] FROM (
    ///   SELECT c.ctid FROM unnest(softfk.absent_keys(7, $1)::pg_catalog.int4[]) AS k (key)
    ///     JOIN ONLY app.enrollment c ON k.key OPERATOR(pg_catalog.=) c.user_id
    ///      FOR UPDATE OF c) l
    /// -- locking first: act
    /// DELETE FROM ONLY app.enrollment c
    ///  USING unnest(softfk.absent_keys(7, $1)::pg_catalog.int4[]) AS k (key)
    ///  WHERE c.ctid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.tid[])
    ///    AND k.key OPERATOR(pg_catalog.=) c.user_id
    /// ```
    pub fn purge_sql(&self, leaf: &str, pass: Pass) -> PurgeSql {
        let key = self.child_key();
        let keys = format!(
            "pg_catalog.unnest(softfk.absent_keys({id}, $1)::{parent_type}[]) AS k (key)",
            id = self.id,
            parent_type = self.parent_type,
        );
        let key_matches = format!("k.key OPERATOR({}) {key}", self.operator);
        match pass {
            Pass::First => PurgeSql::One(self.action_sql(
                leaf,
                "",
                &format!(
                    "c.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT c.ctid FROM {keys} JOIN ONLY {leaf} c ON {key_matches} \
                                          FOR UPDATE OF c SKIP LOCKED))"
                ),
            )),
            Pass::Final => PurgeSql::One(self.action_sql(leaf, &keys, &key_matches)),
            Pass::FinalLockingFirst => PurgeSql::LockThenAct {
                lock: format!(
                    "SELECT pg_catalog.array_agg(l.ctid)::pg_catalog.text[] FROM \
                       (SELECT c.ctid FROM {keys} JOIN ONLY {leaf} c ON {key_matches} FOR UPDATE OF c) l"
                ),
                act: self.action_sql(
                    leaf,
                    &keys,
                    &format!("c.ctid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.tid[]) AND {key_matches}"),
                ),
            },
        }
    }

    /// The on_delete action on the rows of `leaf` (alias `c`) that meet `condition`, joined
    /// to `using` (a FROM item, or empty).
    fn action_sql(&self, leaf: &str, using: &str, condition: &str) -> String {
        let column = quote_ident(&self.child_column);
        let (delete_using, update_from) = if using.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("USING {using}"), format!("FROM {using}"))
        };
        match self.on_delete {
            OnDelete::Cascade => format!("DELETE FROM ONLY {leaf} c {delete_using} WHERE {condition}"),
            OnDelete::SetNull => {
                format!("UPDATE ONLY {leaf} c SET {column} = NULL {update_from} WHERE {condition}")
            }
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
            parent_column = quote_ident(&self.parent_column),
            op = self.operator,
        )
    }

    /// Whether a live child row written by this transaction holds the key `$1` (given as
    /// text, read as the parent key's type). The check trigger asks it on its rare path.
    pub fn rows_written_here_with_key_sql(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {child} c \
                             WHERE $1::{parent_type} OPERATOR({op}) {key} \
                               AND softfk.written_by_this_transaction(c.xmin))",
            child = relation(&self.child_table, self.child_partitioned),
            parent_type = self.parent_type,
            op = self.operator,
            key = self.child_key(),
        )
    }

    /// The child key as compared with the parent key (cast when the types differ).
    fn child_key(&self) -> String {
        let column = format!("c.{}", quote_ident(&self.child_column));
        match &self.child_cast {
            Some(cast) => format!("({column})::{cast}"),
            None => column,
        }
    }

    /// Whether the current user may read the child and the parent, as counting orphans does.
    pub fn readable_by_caller(&self) -> bool {
        registry::read_one::<bool>(
            "SELECT pg_catalog.has_table_privilege($1, 'SELECT') AND pg_catalog.has_table_privilege($2, 'SELECT')",
            &[self.child_oid.into(), self.parent_oid.into()],
        )
        .unwrap_or(false)
    }

    /// One row of `orphan_report()`: counts and the first ten distinct orphan keys.
    fn report_sql(&self) -> String {
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
    /// changes those of the ctids `$2` whose key is still absent.
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

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Orphan rows, distinct orphan keys, the ten smallest of those keys, and the child rows the
/// anti-join examined.
fn count_orphans(reference: &Reference) -> (i64, i64, Vec<Option<String>>, i64) {
    let mut counts = (0, 0, Vec::new());
    // rows_examined comes from the anti-join's own scan of the child (alias c), not from a
    // second pass over it.
    let rows_examined = with_report_work_mem(|| {
        scan_count::run(&reference.report_sql(), "c", &mut |row| unsafe {
            counts = (
                i64::from_datum(row[0].unwrap(), false).unwrap(),
                i64::from_datum(row[1].unwrap(), false).unwrap(),
                row[2]
                    .and_then(|keys| Vec::<Option<String>>::from_datum(keys, false))
                    .unwrap_or_default(),
            );
        })
    });
    (counts.0, counts.1, counts.2, rows_examined)
}

/// softfk_add, for a column no validated foreign key covers: the orphans it already has, as
/// a NOTICE. The caller (who owns the child) counts with their own rights; one who cannot
/// read the parent is told the count was skipped.
pub fn announce_existing_orphans(reference_id: i64) {
    let reference = registry::load(registry::Which::Id(reference_id))
        .pop()
        .expect("just registered");
    let column = format!(
        "{}.{}",
        reference.child_table,
        registry::quote_identifier(&reference.child_column)
    );
    if !reference.readable_by_caller() {
        notice(format!("existing rows of {column} were not checked for orphans"))
            .hint("Counting them needs SELECT on the child and the parent table; orphan_report() counts them later.")
            .send();
        return;
    }
    let (rows, keys, sample, _) = count_orphans(&reference);
    if rows > 0 {
        let sample: Vec<_> = sample.into_iter().flatten().collect();
        notice(format!(
                "{column} already has {rows} orphan row{} ({keys} distinct key{}, e.g. {}) with no row in {}",
                if rows == 1 { "" } else { "s" },
                if keys == 1 { "" } else { "s" },
                sample.join(", "),
                reference.parent_table,
        ))
        .hint(format!(
                "SELECT * FROM orphan_rows('{}', '{}') lists them. The purge acts on parent rows \
                 deleted from now on; a sweep (pg_softfk.sweep_interval) would apply on_delete to these too.",
                reference.child_table.replace('\'', "''"),
                reference.child_column.replace('\'', "''"),
        ))
        .send();
    }
}

/// SQL: orphan_report() RETURNS TABLE(child regclass, child_column text, parent regclass,
///   parent_column text, orphan_rows bigint, orphan_keys bigint, sample_keys text[],
///   rows_examined bigint, elapsed_ms float8)
// (pgrx reads the column names from the tuple written out here; an alias would hide them.)
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn orphan_report() -> TableIterator<
    'static,
    (
        name!(child, pg_sys::Oid),
        name!(child_column, String),
        name!(parent, pg_sys::Oid),
        name!(parent_column, String),
        name!(orphan_rows, i64),
        name!(orphan_keys, i64),
        name!(sample_keys, Vec<Option<String>>),
        name!(rows_examined, i64),
        name!(elapsed_ms, f64),
    ),
> {
    // Counting reads the child and the parent with the caller's rights: references whose
    // tables the caller may not read are left out, and named in a NOTICE.
    // A registration that can no longer be checked is named in a WARNING; the others are
    // counted.
    let usable: Vec<Reference> = registry::load_each(registry::Which::All)
        .into_iter()
        .filter_map(|loaded| {
            loaded
                .map_err(|unusable| {
                    warning(format!("orphan_report() skipped a {}", unusable.message))
                        .hint("Change the column type back, or remove the soft reference with softfk_drop().")
                        .send()
                })
                .ok()
        })
        .collect();
    let (readable, unreadable): (Vec<_>, Vec<_>) =
        usable.into_iter().partition(Reference::readable_by_caller);
    if !unreadable.is_empty() {
        let names: Vec<_> = unreadable
            .iter()
            .map(|r| {
                format!(
                    "{}.{}",
                    r.child_table,
                    registry::quote_identifier(&r.child_column)
                )
            })
            .collect();
        notice(format!(
            "orphan_report() skipped {} soft reference{} whose tables you may not read: {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ))
        .hint("Counting orphans needs SELECT on the child and the parent table.")
        .send();
    }
    let rows: Vec<_> = readable
        .into_iter()
        .map(|reference| {
            let started = Instant::now();
            let (orphan_rows, orphan_keys, sample_keys, rows_examined) = count_orphans(&reference);
            (
                reference.child_oid,
                reference.child_column,
                reference.parent_oid,
                reference.parent_column,
                orphan_rows,
                orphan_keys,
                sample_keys,
                rows_examined,
                (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// SQL: the query behind orphan_rows(child, child_column), which runs it.
#[pg_extern(sql = false)]
fn orphan_rows_query(child: Option<pg_sys::Oid>, child_column: Option<&CStr>) -> String {
    let child = required(child, "child");
    let column = required(child_column, "child_column").to_string_lossy();
    let reference = registry::load_child(child, &column);
    format!(
        "SELECT o.child_table::pg_catalog.regclass, o.ctid, o.key::pg_catalog.text, pg_catalog.to_jsonb(o.child_row) FROM ({}) o",
        reference.orphan_rows_sql()
    )
}

/// Run `f` with work_mem raised to maintenance_work_mem, as core's RI_Initial_Check does for
/// the same anti-join, so the parent's keys fit in one hash table. The old value comes back
/// when `f` returns (and on error, with the transaction).
fn with_report_work_mem<R>(f: impl FnOnce() -> R) -> R {
    let kilobytes = unsafe { pg_sys::maintenance_work_mem }.to_string();
    with_settings(
        &[(c"work_mem", &kilobytes), (c"hash_mem_multiplier", "1")],
        f,
    )
}
