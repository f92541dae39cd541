//! `softfk_purge()` and `softfk_restore()`: the purge, run by hand, and undone for one key.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::postgres::error::{error, required};
use crate::purge::{self, Mode};

/// SQL: softfk_purge() RETURNS TABLE (child regclass, child_column text, parent regclass,
///   on_delete text, rows bigint)
/// Run the purge now, in this transaction, and say per reference how many rows it changed.
#[pg_extern(sql = false)]
fn softfk_purge() -> TableIterator<
    'static,
    (
        name!(child, pg_sys::Oid),
        name!(child_column, String),
        name!(parent, pg_sys::Oid),
        name!(on_delete, String),
        name!(rows, i64),
    ),
> {
    // SAFETY: reads the current transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        error(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "softfk_purge() must run at isolation level READ COMMITTED",
        )
        .detail("Each purge statement must see the rows committed since the transaction began.")
        .raise();
    }
    if purge::replica_of_a_publisher() {
        error(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "softfk_purge() does not run in a database that subscribes to logical replication",
        )
        .detail("The publisher's purge arrives here as replicated changes.")
        .hint("Run it on the publisher; or, where the softfk tables are not replicated, SET pg_softfk.purge_on_subscriber = on.")
        .raise();
    }
    let report = purge::run(Mode::Function).expect("softfk_purge() waits for the run lock");
    let rows: Vec<_> = report
        .rows
        .into_values()
        .filter(|touched| touched.rows.total() > 0)
        .map(|t| {
            (
                t.child,
                t.child_column,
                t.parent,
                t.on_delete.as_str().to_string(),
                t.rows.total(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// SQL: softfk_restore(parent regclass, key text) RETURNS bigint
/// Put back every child row archived after parent key `key` was deleted (re-create the parent
/// first: validated references check the restored rows). The rows are inserted with the
/// caller's rights; they leave the archive in the same transaction.
///
/// A row is put back as it was archived, into the child as it is now: its columns by name,
/// generated columns computed afresh, columns added since the archiving given their defaults.
/// A row with a value for a column the child no longer has (dropped or renamed since) is
/// refused, with nothing restored and nothing taken out of the archive: no value is dropped
/// silently.
#[pg_extern(sql = false)]
fn softfk_restore(parent: Option<pg_sys::Oid>, key: Option<&str>) -> i64 {
    purge::archive::restore(required(parent, "parent"), required(key, "key"))
}
