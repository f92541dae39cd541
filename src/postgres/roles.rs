//! Running code as another role, the way core's referential-integrity triggers run their
//! queries as a table's owner.

use std::cell::Cell;

use pgrx::pg_sys;

use super::guc::{with_settings, SAFE_SEARCH_PATH};
use super::spi::read_one;
use super::transaction::on_transaction_end;

/// Run `f` as the extension's owner, with search_path pinned to the catalogs
/// ([`SAFE_SEARCH_PATH`]). pg_softfk's own tables are granted to no one: callers reach them
/// only through functions that first check, as the caller, what the caller may do. An error
/// unwinds the transaction, which restores the caller's identity and search_path.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    as_role(extension_owner(), || with_settings(&[SAFE_SEARCH_PATH], f))
}

thread_local! {
    /// The extension's owner for the rest of this transaction, with the extension's oid it was
    /// read for: a purge batch over Open edX's ~170 references asks about 1,000 times.
    static OWNER: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
    static FORGET_AT_END_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// pg_extension.extowner of pg_softfk, read once per transaction (and again if the extension
/// was dropped and created since in it).
fn extension_owner() -> pg_sys::Oid {
    // SAFETY: an index lookup in pg_extension by name; InvalidOid when it is absent.
    let extension = unsafe { pg_sys::get_extension_oid(c"pg_softfk".as_ptr(), true) };
    if let Some((read_for, owner)) = OWNER.get() {
        if read_for == extension {
            return owner;
        }
    }
    let owner = read_one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_softfk'",
        &[],
    )
    .expect("pg_softfk is installed");
    if !FORGET_AT_END_REGISTERED.replace(true) {
        on_transaction_end(|_| OWNER.set(None));
    }
    OWNER.set(Some((extension, owner)));
    owner
}

/// Run `f` as `role`: row-level security applies as to that owner (not forced on it).
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    with_security_context(
        role,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_NOFORCE_RLS,
        f,
    )
}

/// Run `f` as the owner of a table, for code of that owner's that `f` fires (statements on
/// the table, its triggers): as [`as_role`], and as a restricted operation, as core runs index
/// expressions in VACUUM, so that the owner's code can leave no session state behind
/// (temporary objects, prepared statements, held cursors, LISTEN, SET ROLE).
pub fn as_table_owner<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    with_security_context(
        role,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE
            | pg_sys::SECURITY_NOFORCE_RLS
            | pg_sys::SECURITY_RESTRICTED_OPERATION,
        f,
    )
}

/// Whether the current user owns (or is a member of the role owning) the relation, as
/// ALTER TABLE requires.
pub fn current_user_owns(relation: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups by oid; a relation that does not exist raises an error.
    unsafe {
        // (PostgreSQL 16 replaced the per-catalog ownership checks with object_ownercheck.)
        #[cfg(feature = "pg15")]
        return pg_sys::pg_class_ownercheck(relation, pg_sys::GetUserId());
        #[cfg(not(feature = "pg15"))]
        return pg_sys::object_ownercheck(
            pg_sys::RelationRelationId,
            relation,
            pg_sys::GetUserId(),
        );
    }
}

fn with_security_context<R>(role: pg_sys::Oid, flags: u32, f: impl FnOnce() -> R) -> R {
    let (mut caller, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads and writes of the backend's current user; an error unwinding out of
    // `f` aborts the (sub)transaction, which restores the user and context saved at its start.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        pg_sys::SetUserIdAndSecContext(role, context | flags as i32);
    }
    let result = f();
    // SAFETY: as above; puts back what was read before `f`.
    unsafe { pg_sys::SetUserIdAndSecContext(caller, context) };
    result
}
