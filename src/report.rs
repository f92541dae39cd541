//! The report: counting orphans, child rows whose non-NULL key has no parent row, with the
//! caller's rights. The queries come from the query builder (src/catalog/query.rs); this
//! module runs them, counts the child rows they examined without a second scan
//! (src/postgres/scan_count.rs), and decides what a caller may see.

use std::time::Instant;

use pgrx::prelude::*;

use crate::catalog::reference::{self, Reference, Which};
use crate::postgres::error::{notice, warning};
use crate::postgres::guc::with_settings;
use crate::postgres::quote;
use crate::postgres::scan_count;
use crate::postgres::spi::read_one;

/// Whether the current user may read the child and the parent, as counting orphans does.
pub fn readable_by_caller(reference: &Reference) -> bool {
    read_one::<bool>(
        "SELECT pg_catalog.has_table_privilege($1, 'SELECT') AND pg_catalog.has_table_privilege($2, 'SELECT')",
        &[reference.child_oid.into(), reference.parent_oid.into()],
    )
    .unwrap_or(false)
}

/// Orphan rows, distinct orphan keys, the ten smallest of those keys, and the child rows the
/// anti-join examined.
fn count_orphans(reference: &Reference) -> (i64, i64, Vec<Option<String>>, i64) {
    let mut counts = (0, 0, Vec::new());
    // rows_examined comes from the anti-join's own scan of the child (alias c), not from a
    // second pass over it.
    let rows_examined = with_report_work_mem(|| {
        scan_count::run(&reference.report_sql(), "c", &mut |row| {
            // SAFETY: report_sql's three columns are bigint, bigint and text[], and their
            // datums are valid for the duration of this call.
            counts = unsafe {
                (
                    i64::from_datum(row[0].unwrap(), false).unwrap(),
                    i64::from_datum(row[1].unwrap(), false).unwrap(),
                    row[2]
                        .and_then(|keys| Vec::<Option<String>>::from_datum(keys, false))
                        .unwrap_or_default(),
                )
            };
        })
    });
    (counts.0, counts.1, counts.2, rows_examined)
}

/// softfk_add, for a column no validated foreign key covers: the orphans it already has, as
/// a NOTICE. The caller (who owns the child) counts with their own rights; one who cannot
/// read the parent is told the count was skipped.
pub fn announce_existing_orphans(reference_id: i64) {
    let reference = reference::load(Which::Id(reference_id))
        .pop()
        .expect("just registered");
    let column = format!(
        "{}.{}",
        reference.child_table, reference.child_column_quoted
    );
    if !readable_by_caller(&reference) {
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
                "SELECT * FROM orphan_rows({}, {}) lists them. The purge acts on parent rows \
                 deleted from now on; a sweep (pg_softfk.sweep_interval) would apply on_delete to these too.",
                quote::literal(&reference.child_table),
                quote::literal(&reference.child_column),
        ))
        .send();
    }
}

/// One row of `orphan_report()`.
pub struct ReportRow {
    pub reference: Reference,
    pub orphan_rows: i64,
    pub orphan_keys: i64,
    /// The ten smallest distinct orphan keys.
    pub sample_keys: Vec<Option<String>>,
    pub rows_examined: i64,
    pub elapsed_ms: f64,
}

/// Every registration the caller may read, counted.
pub fn orphan_report() -> Vec<ReportRow> {
    // Counting reads the child and the parent with the caller's rights: references whose
    // tables the caller may not read are left out, and named in a NOTICE.
    // A registration that can no longer be checked is named in a WARNING; the others are
    // counted.
    let usable: Vec<Reference> = reference::load_each(Which::All)
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
    let (readable, unreadable): (Vec<_>, Vec<_>) = usable.into_iter().partition(readable_by_caller);
    if !unreadable.is_empty() {
        let names: Vec<_> = unreadable
            .iter()
            .map(|r| format!("{}.{}", r.child_table, r.child_column_quoted))
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
    readable
        .into_iter()
        .map(|reference| {
            let started = Instant::now();
            let (orphan_rows, orphan_keys, sample_keys, rows_examined) = count_orphans(&reference);
            ReportRow {
                reference,
                orphan_rows,
                orphan_keys,
                sample_keys,
                rows_examined,
                elapsed_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            }
        })
        .collect()
}

/// The query behind `orphan_rows(child, child_column)`: the orphan rows of that column's
/// registration, as (child table, ctid, key as text, row as jsonb).
pub fn orphan_rows_query(child: pg_sys::Oid, child_column: &str) -> String {
    let reference = reference::load_child(child, child_column);
    format!(
        "SELECT o.child_table::pg_catalog.regclass, o.ctid, o.key::pg_catalog.text, pg_catalog.to_jsonb(o.child_row) FROM ({}) o",
        reference.orphan_rows_sql()
    )
}

/// Run `f` with work_mem raised to maintenance_work_mem, as core's RI_Initial_Check does for
/// the same anti-join, so the parent's keys fit in one hash table. The old value comes back
/// when `f` returns (and on error, with the transaction).
fn with_report_work_mem<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: reads the current value of a setting.
    let kilobytes = unsafe { pg_sys::maintenance_work_mem }.to_string();
    with_settings(
        &[(c"work_mem", &kilobytes), (c"hash_mem_multiplier", "1")],
        f,
    )
}
