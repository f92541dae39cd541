//! `softfk.absent_keys`: the parent check inside every purge statement. The statement runs as
//! the child's owner, who may not read the parent; this reads it as the extension's owner.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
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
/// this reads it as the extension's owner, for a caller that owns the child or may read the
/// parent, under a snapshot taken as it runs (never older than the calling statement's).
#[pg_extern(sql = false)]
fn absent_keys(reference: i64, keys: Vec<String>) -> Option<Vec<String>> {
    let caller = process::current_user();
    let prepared_here = PARENT_CHECK.with_borrow(|check| {
        check
            .as_ref()
            .is_some_and(|check| check.reference == reference && check.role == caller)
    });
    if !prepared_here {
        let sql = absent_keys_sql_for(reference, caller);
        return as_extension_owner(|| {
            with_settings(&KEY_TEXT_SETTINGS, || {
                read_one::<Vec<String>>(&sql, &[keys.into()])
            })
        });
    }
    // The purge's own statements: the plan made for the first of them. (The query runs under
    // a snapshot taken as it starts, as any SPI query of a transaction that has written: it
    // sees every parent row the calling statement sees, and any committed since.)
    as_extension_owner(|| {
        with_settings(&KEY_TEXT_SETTINGS, || {
            Spi::connect(|client| {
                PARENT_CHECK.with_borrow_mut(|check| {
                    let check = check.as_mut().expect("prepared above");
                    let plan = check.plan.get_or_insert_with(|| {
                        client
                            .prepare(check.sql.as_str(), &[PgBuiltInOids::TEXTARRAYOID.into()])
                            .expect("preparing the parent check")
                            .keep()
                    });
                    let rows = client
                        .select(&*plan, None, &[keys.into()])
                        .expect("running the parent check");
                    if rows.is_empty() {
                        return None;
                    }
                    rows.first()
                        .get::<Vec<String>>(1)
                        .expect("reading the absent keys")
                })
            })
        })
    })
}

/// The parent check of the purge statements being run.
struct Prepared {
    reference: i64,
    /// The child's owner, whom the statements run as.
    role: pg_sys::Oid,
    sql: String,
    /// Its plan, made by the first statement that asks and kept until the reference's
    /// statements are done: parsing and planning it for each statement cost as much as
    /// running it.
    plan: Option<OwnedPreparedStatement>,
}

thread_local! {
    /// The parent check of the purge statements being run, so that softfk.absent_keys need
    /// not load and check the reference, nor plan its query, for every statement.
    static PARENT_CHECK: RefCell<Option<Prepared>> = const { RefCell::new(None) };
}

/// [`PARENT_CHECK`] for one reference's statements, forgotten when dropped.
pub struct ParentCheck;

impl ParentCheck {
    pub fn prepare(reference: &Reference, owner: pg_sys::Oid) -> ParentCheck {
        PARENT_CHECK.set(Some(Prepared {
            reference: reference.id,
            role: owner,
            sql: reference.absent_keys_sql(),
            plan: None,
        }));
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
