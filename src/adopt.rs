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

use crate::error::{error, required};
use crate::registry::{self, as_extension_owner, quote_identifier};

/// SQL: softfk.remember_foreign_key(child regclass, constraint_name name)
/// softfk_adopt, between registering the column and dropping the constraint: keep the
/// constraint's name and options with the registration (softfk.adopted_foreign_key; removed
/// with the registration). Everything written comes from the catalogs, about a table the
/// caller owns.
#[pg_extern(sql = false)]
fn remember_foreign_key(child: Option<pg_sys::Oid>, constraint_name: Option<&CStr>) {
    let child = required(child, "child");
    let constraint_name = required(constraint_name, "constraint_name").to_string_lossy();
    registry::require_owner(child);
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

/// SQL: softfk.foreign_key_clause(child regclass, child_column name) RETURNS text
/// The `[CONSTRAINT name] FOREIGN KEY ... REFERENCES ...` clause that puts back a native
/// foreign key for the soft reference on child.child_column, for ALTER TABLE ... ADD. An
/// adopted key comes back as it was (name, ON UPDATE, MATCH FULL, DEFERRABLE), and with its
/// ON DELETE unless softfk_alter changed the action since; the name is left to PostgreSQL
/// when another constraint of the table has taken it meanwhile. (softfk_revert uses the same
/// clause on a partitioned child's partitions, so they get the same name, as core's clones
/// do.) 'archive' has no native equivalent: refused.
#[pg_extern(sql = false)]
fn foreign_key_clause(child: Option<pg_sys::Oid>, child_column: Option<&CStr>) -> String {
    let child = required(child, "child");
    let child_column = required(child_column, "child_column").to_string_lossy();
    let reference = registry::load_child(child, &child_column);
    let on_delete = match reference.on_delete.as_str() {
        "cascade" => "CASCADE",
        "set null" => "SET NULL",
        "no action" => "NO ACTION",
        _ => error(
            ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("on_delete '{}' has no native foreign key equivalent", reference.on_delete.as_str()),
        )
        .detail("A foreign key cannot keep the rows it deletes.")
        .hint("softfk_alter(child, column, on_delete => 'cascade') first if a native ON DELETE CASCADE will do.")
        .raise(),
    };
    let adopted = as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT a.constraint_name::text, a.on_delete, a.on_update, a.match_full,
                            a.is_deferrable, a.initially_deferred,
                            EXISTS (SELECT FROM pg_catalog.pg_constraint con
                                     WHERE con.conname = a.constraint_name AND con.conrelid = $2)
                       FROM softfk.adopted_foreign_key a
                      WHERE a.reference_id = $1",
                    None,
                    &[reference.id.into(), child.into()],
                )
                .expect("reading softfk.adopted_foreign_key");
            rows.into_iter().next().map(|row| {
                let text = |n: usize| row.get::<String>(n).unwrap().unwrap();
                let flag = |n: usize| row.get::<bool>(n).unwrap().unwrap();
                (
                    text(1),
                    text(2),
                    text(3),
                    flag(4),
                    flag(5),
                    flag(6),
                    flag(7),
                )
            })
        })
    });
    let mut clause = String::new();
    let mut options = String::new();
    match adopted {
        Some((
            name,
            adopted_on_delete,
            on_update,
            match_full,
            deferrable,
            deferred,
            name_taken,
        )) => {
            if !name_taken {
                clause = format!("CONSTRAINT {} ", quote_identifier(&name));
            }
            // RESTRICT was adopted as 'no action': it comes back as RESTRICT.
            let on_delete = match (adopted_on_delete.as_str(), on_delete) {
                ("restrict", "NO ACTION") => "RESTRICT",
                _ => on_delete,
            };
            if match_full {
                options.push_str(" MATCH FULL");
            }
            options.push_str(&format!(
                " ON UPDATE {} ON DELETE {on_delete}",
                on_update.to_uppercase()
            ));
            if deferrable {
                options.push_str(" DEFERRABLE");
            }
            if deferred {
                options.push_str(" INITIALLY DEFERRED");
            }
        }
        None => options = format!(" ON DELETE {on_delete}"),
    }
    clause.push_str(&format!(
        "FOREIGN KEY ({}) REFERENCES {} ({}){options}",
        quote_identifier(&reference.child_column),
        reference.parent_table,
        quote_identifier(&reference.parent_column),
    ));
    clause
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
    registry::require_owner(child);
    for table in [child, parent] {
        unsafe { pg_sys::LockRelationOid(table, pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE) };
    }
}

/// SQL: softfk.revert_outside_transaction_block()
/// softfk_revert commits between its steps: refused inside a transaction block, with core's
/// own error (25001, as for VACUUM), before anything is done.
#[pg_extern(sql = false)]
fn revert_outside_transaction_block() {
    unsafe { pg_sys::PreventInTransactionBlock(true, c"softfk_revert".as_ptr()) };
}
