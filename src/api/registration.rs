//! Registering soft references: `softfk_add`, `softfk_alter`, `softfk_drop`.
//!
//! `softfk_add` checks a definition the way core checks `ALTER TABLE ... ADD FOREIGN KEY`
//! (table kinds, ownership, REFERENCES privilege, a unique index on the parent key, comparable
//! types) and only then writes one row to `softfk.reference`. Every check raises an error with
//! a SQLSTATE before anything is written, so a refused call changes nothing.
//!
//! A column that no validated foreign key vouches for may already hold orphans: softfk_add
//! counts them (one scan of the child, as core's validation does) and says so in a NOTICE,
//! before it takes the locks that block writers to the child. During the count it holds SHARE
//! UPDATE EXCLUSIVE on the child, which serialises two sessions registering the same column
//! (the second one sees the first one's row and gets a clean "already has a soft reference"
//! error instead of a unique violation), and ACCESS SHARE on the parent — unless no reference
//! to that parent column exists yet: then nothing captures the parent's deletes until this
//! registration commits, so SHARE ROW EXCLUSIVE on the parent comes first. Then, like core,
//! it takes SHARE ROW EXCLUSIVE on the child and the parent to create the triggers: writes to
//! both wait for the rest of the registering transaction.

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::catalog::reference::{not_registered, OnDelete, Validate, Word};
use crate::catalog::table::{
    has_valid_foreign_key, registered_parent, require_comparable, require_nullable_for_set_null,
    Table,
};
use crate::postgres::error::{error, required};
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::read_one;
use crate::settings::ORPHANS_ON_ADD;
use crate::{capture, check, report};

/// SQL: softfk_add(child regclass, child_column name, parent regclass,
///                 parent_column name DEFAULT NULL (the primary key),
///                 on_delete text DEFAULT 'cascade', validate text DEFAULT 'deferred')
#[pg_extern(sql = false)]
fn softfk_add(
    child: Option<pg_sys::Oid>,
    child_column: Option<&CStr>,
    parent: Option<pg_sys::Oid>,
    parent_column: Option<&CStr>,
    on_delete: Option<&str>,
    validate: Option<&str>,
) {
    let child = required(child, "child");
    let child_column = name_arg(required(child_column, "child_column"));
    let parent = required(parent, "parent");
    let on_delete = OnDelete::argument("on_delete", required(on_delete, "on_delete"));
    let validate = Validate::argument("validate", required(validate, "validate"));

    let child_rel = Table::describe(child);
    let parent_rel = Table::describe(parent);
    child_rel.require_registrable("child");
    parent_rel.require_registrable("parent");
    if parent_rel.unlogged && !child_rel.unlogged {
        // As core refuses for a foreign key: after a crash an unlogged parent comes back
        // empty, and every row of the permanent child would be an orphan for the purge.
        error(
            ERRCODE_INVALID_TABLE_DEFINITION,
            "soft references on permanent tables may reference only permanent tables",
        )
        .detail(format!(
            "\"{}\" is unlogged; \"{}\" is not.",
            parent_rel.name, child_rel.name
        ))
        .raise();
    }
    child_rel.require_owner();
    parent_rel.require_references_privilege();
    // Until the existing rows are counted, locks that let writers through: SHARE UPDATE
    // EXCLUSIVE on the child (it conflicts with itself, so two registrations of the same
    // column still wait for each other) and ACCESS SHARE on the parent.
    child_rel.lock(pg_sys::ShareUpdateExclusiveLock);
    parent_rel.lock(pg_sys::AccessShareLock);

    let child_col = child_rel.column(&child_column);
    let parent_col = match parent_column {
        Some(name) => parent_rel.column(&name_arg(name)),
        None => parent_rel.primary_key_column(),
    };
    if child == parent && child_col.attnum == parent_col.attnum {
        error(
            ERRCODE_INVALID_FOREIGN_KEY,
            format!(
                "column \"{}\" cannot be a soft reference to itself",
                child_col.name
            ),
        )
        .raise();
    }
    require_comparable(&child_rel, &child_col, &parent_rel, &parent_col);
    require_nullable_for_set_null(on_delete, &child_rel, &child_col);
    if let Some(existing) = registered_parent(child, child_col.attnum) {
        error(
            ERRCODE_DUPLICATE_OBJECT,
            format!(
                "column \"{}\" of table \"{}\" already has a soft reference",
                child_col.name, child_rel.name
            ),
        )
        .detail(format!("It references {existing}."))
        .hint("Remove it with softfk_drop() first to register it differently.")
        .raise();
    }

    let already_captured = as_extension_owner(|| {
        read_one::<bool>(
            "SELECT EXISTS (SELECT FROM softfk.reference WHERE parent_table = $1 AND parent_attnum = $2)",
            &[parent.into(), parent_col.attnum.into()],
        )
    })
    .unwrap_or(false);
    let id = as_extension_owner(|| {
        Spi::get_one_with_args::<i64>(
            "INSERT INTO softfk.reference
                (child_table, child_column, parent_table, parent_column, on_delete, validate)
         VALUES ($1::oid::regclass, $2, $3::oid::regclass, $4, $5, $6)
         RETURNING id",
            &[
                child.into(),
                child_col.name.as_str().into(),
                parent.into(),
                parent_col.name.as_str().into(),
                on_delete.as_str().into(),
                validate.as_str().into(),
            ],
        )
    })
    .expect("writing softfk.reference")
    .expect("INSERT RETURNING returns the id");
    // A parent row deleted while the count runs must still be captured. When the parent
    // column is captured already (another reference to it), its triggers queue the key, and
    // the key's final pass waits for this transaction, so it sees this reference. When it is
    // not, the triggers come with this registration: parent writes must wait from now on.
    if !already_captured {
        parent_rel.lock(pg_sys::ShareRowExclusiveLock);
    }
    if ORPHANS_ON_ADD.get()
        && !has_valid_foreign_key(child, child_col.attnum, parent, parent_col.attnum)
    {
        report::announce_existing_orphans(id);
    }
    // Now the triggers: creating them needs SHARE ROW EXCLUSIVE on both tables, as for a
    // native foreign key. The check triggers are created as the caller, who owns the child.
    child_rel.lock(pg_sys::ShareRowExclusiveLock);
    parent_rel.lock(pg_sys::ShareRowExclusiveLock);
    check::install(id, child, &child_col.name, validate);
    capture::sync(parent);
}

/// SQL: softfk_alter(child regclass, child_column name, on_delete text DEFAULT NULL,
///                   validate text DEFAULT NULL)
/// Change what a registration does; a NULL argument keeps that setting. Changing `validate`
/// replaces the check triggers; rows already in the table are not re-checked.
#[pg_extern(sql = false)]
fn softfk_alter(
    child: Option<pg_sys::Oid>,
    child_column: Option<&CStr>,
    on_delete: Option<&str>,
    validate: Option<&str>,
) {
    let child = required(child, "child");
    let child_column = name_arg(required(child_column, "child_column"));
    if on_delete.is_none() && validate.is_none() {
        error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "on_delete and validate must not both be NULL")
            .hint("Pass the setting to change, e.g. softfk_alter(child, column, validate => 'immediate').")
            .raise();
    }
    let on_delete = on_delete.map(|word| OnDelete::argument("on_delete", word));
    let validate = validate.map(|word| Validate::argument("validate", word));
    let child_rel = Table::describe(child);
    child_rel.require_owner();
    child_rel.lock(pg_sys::ShareRowExclusiveLock);
    let column = child_rel.column(&child_column);
    if let Some(on_delete) = on_delete {
        require_nullable_for_set_null(on_delete, &child_rel, &column);
    }
    // (Through a CTE so that "not registered" is a row with a NULL, not an empty result.)
    let id = as_extension_owner(|| {
        Spi::get_one_with_args::<i64>(
            "WITH changed AS (
            UPDATE softfk.reference
               SET on_delete = coalesce($3, on_delete), validate = coalesce($4, validate)
             WHERE child_table = $1 AND child_attnum = $2
            RETURNING id)
         SELECT max(id) FROM changed",
            &[
                child.into(),
                column.attnum.into(),
                on_delete.map(OnDelete::as_str).into(),
                validate.map(Validate::as_str).into(),
            ],
        )
    })
    .expect("updating softfk.reference")
    .unwrap_or_else(|| not_registered(&child_rel.name, &column.name));
    if let Some(validate) = validate {
        check::remove(id, child);
        check::install(id, child, &column.name, validate);
    }
}

/// SQL: softfk_drop(child regclass, child_column name)
#[pg_extern(sql = false)]
fn softfk_drop(child: Option<pg_sys::Oid>, child_column: Option<&CStr>) {
    let child = required(child, "child");
    let child_column = name_arg(required(child_column, "child_column"));
    let child_rel = Table::describe(child);
    child_rel.require_owner();
    child_rel.lock(pg_sys::ShareRowExclusiveLock);
    let column = child_rel.column(&child_column);
    let (id, parent) = as_extension_owner(|| {
        Spi::get_two_with_args::<i64, pg_sys::Oid>(
            "WITH removed AS (
            DELETE FROM softfk.reference WHERE child_table = $1 AND child_attnum = $2
            RETURNING id, parent_table)
         SELECT max(id), max(parent_table::oid) FROM removed",
            &[child.into(), column.attnum.into()],
        )
    })
    .expect("deleting from softfk.reference");
    let id = id.unwrap_or_else(|| not_registered(&child_rel.name, &column.name));
    check::remove(id, child);
    capture::sync(parent.expect("a removed registration has a parent"));
}

fn name_arg(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}
