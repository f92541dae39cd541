//! `softfk_purge()` and `softfk_restore()`: the purge, run by hand, and undone for one key.

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::postgres::error::{error, required};
use crate::postgres::fmgr::function_info_v1;
use crate::purge::{self, Mode};
use crate::worker;

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
    let report =
        purge::run(Mode::Function, &|| false).expect("softfk_purge() waits for the run lock");
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

function_info_v1!(pg_finfo_softfk_restore_key);

/// SQL: softfk_restore(parent regclass, key anycompatible) RETURNS bigint
/// Put back every child row archived after parent key `key` was deleted (re-create the parent
/// first: validated references check the restored rows). The rows are inserted with the
/// caller's rights; they leave the archive in the same transaction.
///
/// The key comes in any type (an integer from a driver that sends typed parameters, a uuid; a
/// quoted literal is text): archived keys are kept in their text form, which the type's output
/// function gives.
///
/// A row is put back as it was archived, into the child as it is now: its columns by name,
/// generated columns computed afresh, columns added since the archiving given their defaults.
/// A row with a value for a column the child no longer has (dropped or renamed since) is
/// refused, with nothing restored and nothing taken out of the archive: no value is dropped
/// silently.
///
/// # Safety
/// Called by PostgreSQL's function manager, with its `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_restore_key(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: two arguments, as declared; the key's type is the call's resolved argument type,
    // whose output function reads the datum.
    let (parent, key) = unsafe {
        let args = (*fcinfo).args.as_slice(2);
        let parent = (!args[0].isnull)
            .then(|| pg_sys::Oid::from_datum(args[0].value, false))
            .flatten();
        let key = (!args[1].isnull).then(|| {
            let key_type = pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1);
            let mut output = pg_sys::InvalidOid;
            let mut varlena = false;
            pg_sys::getTypeOutputInfo(key_type, &mut output, &mut varlena);
            CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, args[1].value))
                .to_string_lossy()
                .into_owned()
        });
        (parent, key)
    };
    let restored = purge::archive::restore(required(parent, "parent"), &required(key, "key"));
    pg_sys::Datum::from(restored)
}

/// softfk_restore(parent regclass, key text) of versions 0.1.0 to 0.3.0, which a database
/// runs until `ALTER EXTENSION pg_softfk UPDATE`.
#[pg_extern(sql = false)]
fn softfk_restore(parent: Option<pg_sys::Oid>, key: Option<&str>) -> i64 {
    purge::archive::restore(required(parent, "parent"), required(key, "key"))
}

/// SQL: softfk.purge_worker() RETURNS TABLE (state text, since timestamptz)
/// Who purges this database: a connected worker, one waiting for a place, none needed.
#[pg_extern(sql = false)]
fn purge_worker() -> TableIterator<
    'static,
    (
        name!(state, &'static str),
        name!(since, Option<TimestampWithTimeZone>),
    ),
> {
    let (service, since) = worker::service();
    let since = since.and_then(|at| TimestampWithTimeZone::try_from(at).ok());
    TableIterator::once((service.as_str(), since))
}
