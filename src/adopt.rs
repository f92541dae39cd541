//! Adopting a schema that has native foreign keys, and going back.
//!
//! The flow lives in sql/adopt.sql (softfk_discover, softfk_adopt, the softfk_revert
//! procedure). Two steps need the registry, which only the extension's owner may touch, and
//! are here: remembering what the dropped foreign key looked like (its name, ON UPDATE,
//! MATCH, DEFERRABLE: what a soft reference has no place for), and writing the constraint
//! that puts it back.

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::catalog::reference::{self, OnDelete, Word as _};
use crate::catalog::table;
use crate::postgres::error::{error, required};
use crate::postgres::quote;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::Columns;

/// SQL: softfk.remember_foreign_key(child regclass, constraint_name name)
/// softfk_adopt, between registering the column and dropping the constraint: keep the
/// constraint's name and options with the registration (softfk.adopted_foreign_key; removed
/// with the registration). Everything written comes from the catalogs, about a table the
/// caller owns.
#[pg_extern(sql = false)]
fn remember_foreign_key(child: Option<pg_sys::Oid>, constraint_name: Option<&CStr>) {
    let child = required(child, "child");
    let constraint_name = required(constraint_name, "constraint_name").to_string_lossy();
    table::require_owner(child);
    as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO softfk.adopted_foreign_key
                    (reference_id, constraint_name, on_delete, on_update, match_full,
                     is_deferrable, initially_deferred)
             SELECT r.id, con.conname, softfk.referential_action(con.confdeltype),
                    softfk.referential_action(con.confupdtype), con.confmatchtype = 'f',
                    con.condeferrable, con.condeferred
               FROM pg_catalog.pg_constraint con
               JOIN softfk.reference r ON r.child_table = con.conrelid AND r.child_attnum = con.conkey[1]
              WHERE con.conrelid = $1 AND con.conname = $2 AND con.contype = 'f'",
            &[child.into(), constraint_name.as_ref().into()],
        )
    })
    .expect("writing softfk.adopted_foreign_key");
}

/// SQL: softfk.foreign_key_clause(child regclass, child_column name, on_delete text)
///   RETURNS text
/// The `[CONSTRAINT name] FOREIGN KEY ... REFERENCES ...` clause that puts back a native
/// foreign key for the soft reference on child.child_column, for ALTER TABLE ... ADD. An
/// adopted key comes back as it was (name, ON UPDATE, MATCH FULL, DEFERRABLE), and with its
/// ON DELETE unless softfk_alter changed the action since; the name is left to PostgreSQL
/// when another constraint of the table has taken it meanwhile. (softfk_revert uses the same
/// clause on a partitioned child's partitions, so they get the same name, as core's clones
/// do.) `on_delete`, when not NULL, is the key's ON DELETE instead: 'cascade', 'set null',
/// 'no action' or 'restrict'. 'archive' has no native equivalent: refused.
#[pg_extern(sql = false)]
fn foreign_key_clause(
    child: Option<pg_sys::Oid>,
    child_column: Option<&CStr>,
    on_delete: Option<&str>,
) -> String {
    let child = required(child, "child");
    let child_column = required(child_column, "child_column").to_string_lossy();
    let reference = reference::load_child(child, &child_column);
    let wanted = match on_delete {
        None => reference.on_delete,
        // RESTRICT: NO ACTION checked at once rather than at the end of the statement.
        Some(word) if word.trim().eq_ignore_ascii_case("restrict") => OnDelete::NoAction,
        Some(word) => OnDelete::parse(word).unwrap_or_else(|| {
            error(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid value for on_delete: \"{word}\""),
            )
            .hint("A native foreign key's ON DELETE is one of: cascade, set null, no action, restrict.")
            .raise()
        }),
    };
    let restrict = on_delete.is_some_and(|w| w.trim().eq_ignore_ascii_case("restrict"));
    let on_delete_given = on_delete.is_some();
    let on_delete = wanted.foreign_key_action().unwrap_or_else(|| {
        error(
            ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("on_delete '{}' has no native foreign key equivalent", wanted.as_str()),
        )
        .detail("A foreign key cannot keep the rows it deletes.")
        .hint("CALL softfk_revert(child, column, on_delete => 'cascade'), or another native action: 'set null', 'no action', 'restrict'.")
        .raise()
    });
    let on_delete = if restrict { "RESTRICT" } else { on_delete };
    let adopted = as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT a.constraint_name::text, a.on_delete, a.on_update, a.match_full,
                            a.is_deferrable, a.initially_deferred,
                            EXISTS (SELECT FROM pg_catalog.pg_constraint con
                                     WHERE con.conname = a.constraint_name AND con.conrelid = $2)
                            AS name_taken
                       FROM softfk.adopted_foreign_key a
                      WHERE a.reference_id = $1",
                    None,
                    &[reference.id.into(), child.into()],
                )
                .expect("reading softfk.adopted_foreign_key");
            rows.into_iter().next().map(|row| AdoptedForeignKey {
                constraint_name: row.column("constraint_name").unwrap(),
                on_delete: row.column("on_delete").unwrap(),
                on_update: row.column("on_update").unwrap(),
                match_full: row.column("match_full").unwrap(),
                is_deferrable: row.column("is_deferrable").unwrap(),
                initially_deferred: row.column("initially_deferred").unwrap(),
                name_taken: row.column("name_taken").unwrap(),
            })
        })
    });
    let mut clause = String::new();
    let mut options = String::new();
    match adopted {
        Some(adopted) => {
            if !adopted.name_taken {
                clause = format!(
                    "CONSTRAINT {} ",
                    quote::identifier(&adopted.constraint_name)
                );
            }
            // RESTRICT was adopted as 'no action': it comes back as RESTRICT (unless the
            // caller said otherwise).
            let on_delete = match (adopted.on_delete.as_str(), on_delete) {
                ("restrict", "NO ACTION") if !on_delete_given => "RESTRICT",
                _ => on_delete,
            };
            if adopted.match_full {
                options.push_str(" MATCH FULL");
            }
            options.push_str(&format!(
                " ON UPDATE {} ON DELETE {on_delete}",
                adopted.on_update.to_uppercase()
            ));
            if adopted.is_deferrable {
                options.push_str(" DEFERRABLE");
            }
            if adopted.initially_deferred {
                options.push_str(" INITIALLY DEFERRED");
            }
        }
        None => options = format!(" ON DELETE {on_delete}"),
    }
    clause.push_str(&format!(
        "FOREIGN KEY ({}) REFERENCES {} ({}){options}",
        quote::identifier(&reference.child_column),
        reference.parent_table,
        quote::identifier(&reference.parent_column),
    ));
    clause
}

/// A row of softfk.adopted_foreign_key: the native key a registration replaced.
struct AdoptedForeignKey {
    constraint_name: String,
    /// As softfk.referential_action() words it ('restrict' stays 'restrict').
    on_delete: String,
    on_update: String,
    match_full: bool,
    is_deferrable: bool,
    initially_deferred: bool,
    /// Whether another constraint of the child has taken the name since.
    name_taken: bool,
}

/// SQL: softfk.lock_for_adopt(child regclass, parent regclass)
/// softfk_adopt, first: ACCESS EXCLUSIVE on child and parent, which dropping the foreign key
/// takes anyway (its triggers live on both), so that no registration of another child of the
/// same parent — which holds ACCESS SHARE on it while it counts orphans — can deadlock with
/// the adoption. The caller must own the child; LOCK TABLE would also ask for UPDATE on the
/// parent, which ALTER TABLE ... DROP CONSTRAINT does not.
#[pg_extern(sql = false)]
fn lock_for_adopt(child: Option<pg_sys::Oid>, parent: Option<pg_sys::Oid>) {
    let child = required(child, "child");
    let parent = required(parent, "parent");
    table::require_owner(child);
    for relation in [child, parent] {
        table::lock(relation, pg_sys::AccessExclusiveLock);
    }
}

/// SQL: softfk.revert_outside_transaction_block()
/// softfk_revert commits between its steps: refused inside a transaction block, with core's
/// own error (25001, as for VACUUM), before anything is done.
#[pg_extern(sql = false)]
fn revert_outside_transaction_block() {
    // SAFETY: raises 25001 inside a transaction block; reads only the static name given.
    unsafe { pg_sys::PreventInTransactionBlock(true, c"softfk_revert".as_ptr()) };
}

/// SQL: softfk.on_delete_of_foreign_key(confdeltype "char") RETURNS text
/// The on_delete of a soft reference that does what a native foreign key's ON DELETE action
/// (`pg_constraint.confdeltype`) does; NULL for SET DEFAULT, which a soft reference cannot do.
/// softfk_discover and softfk_adopt ask it, so the mapping is written once, with [`OnDelete`].
#[pg_extern(sql = false)]
fn on_delete_of_foreign_key(confdeltype: i8) -> Option<&'static str> {
    OnDelete::of_foreign_key(confdeltype as u8).map(OnDelete::as_str)
}

/// SQL: softfk.foreign_key_is_enforced(constraint_oid oid) RETURNS boolean
/// Whether a foreign key is enforced: false only for PostgreSQL 18's NOT ENFORCED keys.
#[pg_extern(sql = false)]
fn foreign_key_is_enforced(constraint_oid: pg_sys::Oid) -> bool {
    // (PostgreSQL 18 added NOT ENFORCED foreign keys: pg_constraint.conenforced.)
    #[cfg(feature = "pg18")]
    return crate::postgres::spi::read_one::<bool>(
        "SELECT conenforced FROM pg_catalog.pg_constraint WHERE oid = $1",
        &[constraint_oid.into()],
    )
    .unwrap_or(true);
    #[cfg(not(feature = "pg18"))]
    {
        let _ = constraint_oid;
        true
    }
}

/// SQL: softfk.server_has_not_enforced_keys() RETURNS boolean
/// Whether this server has NOT ENFORCED foreign keys, which softfk_adopt then keeps.
#[pg_extern(sql = false)]
fn server_has_not_enforced_keys() -> bool {
    // (PostgreSQL 18 added them.)
    cfg!(feature = "pg18")
}
