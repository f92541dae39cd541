//! `orphan_report()` and `orphan_rows()`: the report, from psql.

use std::ffi::CStr;

use pgrx::prelude::*;

use crate::postgres::error::required;
use crate::report;

/// SQL: orphan_report() RETURNS TABLE(child regclass, child_column text, parent regclass,
///   parent_column text, orphan_rows bigint, orphan_keys bigint, sample_keys text[],
///   rows_examined bigint, elapsed_ms float8)
/// Every registration whose tables the caller may read, counted with the caller's rights.
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
    let rows: Vec<_> = report::orphan_report()
        .into_iter()
        .map(|row| {
            (
                row.reference.child_oid,
                row.reference.child_column,
                row.reference.parent_oid,
                row.reference.parent_column,
                row.orphan_rows,
                row.orphan_keys,
                row.sample_keys,
                row.rows_examined,
                row.elapsed_ms,
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
    report::orphan_rows_query(child, &column)
}
