//! `softfk.absent_keys`: the parent check inside every purge statement. The statement runs as
//! the child's owner, who may not read the parent; this reads it as the extension's owner.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::query::KEY_TEXT_SETTINGS;
use crate::catalog::reference::{self, Reference, Which};
use crate::postgres::error::error;
use crate::postgres::guc::with_settings;
use crate::postgres::process;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::read_one;

/// SQL: softfk.absent_keys(reference bigint, keys text[]) RETURNS text[]
/// The keys (as text) that have no row in the reference's parent: the parent check inside
/// each purge statement. The statement runs as the child's owner, who may not read the parent;
/// this reads it as the extension's owner, under the calling statement's snapshot (the
/// function is STABLE), for a caller that owns the child or may read the parent.
#[pg_extern(sql = false)]
fn absent_keys(reference: i64, keys: Vec<String>) -> Option<Vec<String>> {
    let caller = process::current_user();
    let prepared = PARENT_CHECK.with_borrow(|check| match check {
        Some((id, role, sql)) if *id == reference && *role == caller => Some(sql.clone()),
        _ => None,
    });
    let sql = match prepared {
        Some(sql) => sql,
        None => absent_keys_sql_for(reference, caller),
    };
    as_extension_owner(|| {
        with_settings(&KEY_TEXT_SETTINGS, || {
            read_one::<Vec<String>>(&sql, &[keys.into()])
        })
    })
}

thread_local! {
    /// The parent check of the purge statements being run: (reference, the child's owner they
    /// run as, the query), so that softfk.absent_keys need not load and check the reference
    /// for every statement.
    static PARENT_CHECK: RefCell<Option<(i64, pg_sys::Oid, String)>> =
        const { RefCell::new(None) };
}

/// [`PARENT_CHECK`] for one reference's statements, forgotten when dropped.
pub struct ParentCheck;

impl ParentCheck {
    pub fn prepare(reference: &Reference, owner: pg_sys::Oid) -> ParentCheck {
        PARENT_CHECK.set(Some((reference.id, owner, reference.absent_keys_sql())));
        ParentCheck
    }
}

impl Drop for ParentCheck {
    fn drop(&mut self) {
        PARENT_CHECK.set(None);
    }
}

/// The parent check of a reference for a caller outside the purge: only for the child's
/// owner or a role that may read the parent.
fn absent_keys_sql_for(reference: i64, caller: pg_sys::Oid) -> String {
    let (allowed, loaded) = as_extension_owner(|| {
        let allowed = read_one::<bool>(
            "SELECT pg_catalog.pg_has_role($2, c.relowner, 'USAGE')
                 OR pg_catalog.has_table_privilege($2, r.parent_table, 'SELECT')
               FROM softfk.reference r JOIN pg_catalog.pg_class c ON c.oid = r.child_table
              WHERE r.id = $1",
            &[reference.into(), caller.into()],
        );
        (allowed, reference::load(Which::Id(reference)).pop())
    });
    let Some(reference) = loaded else {
        error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("soft reference {reference} does not exist"),
        )
        .raise()
    };
    if allowed != Some(true) {
        error(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for the parent of soft reference {}", reference.id),
        )
        .detail("Only the child's owner, or a role that may read the parent, may ask which keys it lacks.")
        .raise();
    }
    reference.absent_keys_sql()
}
