//! Settings (GUCs) changed for a while: for the duration of a closure, for the rest of the
//! transaction, or for the session. pg_softfk's own settings are defined in src/settings.rs.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// The search_path every query pg_softfk writes runs under when it acts for someone else:
/// only the catalogs (and the session's own temporary schema, last). With a caller's path, a
/// function or operator the caller created in one of its schemas, matching our arguments
/// better than the built-in one, would run with the rights of the extension's owner or the
/// child's owner (CVE-2018-1058's pattern).
pub const SAFE_SEARCH_PATH: (&CStr, &str) = (c"search_path", "pg_catalog, pg_temp");

/// Run `f` with each `(setting, value)` set as by `SET`, and throw away every setting changed
/// while `f` runs when it returns: these, and whatever code `f` runs changed, even with a
/// session-level `SET` or `set_config(..., false)`. Core does the same around maintenance
/// commands that run table owners' code (VACUUM, ANALYZE, REINDEX): a new GUC nest level,
/// rolled back as if aborted. Otherwise a trigger on a child table, fired by a purge
/// statement, could leave a `search_path` behind for the next statement, which runs for
/// another table's owner. On error the (sub)transaction's abort restores them.
pub fn with_settings<R>(settings: &[(&CStr, &str)], f: impl FnOnce() -> R) -> R {
    unsafe {
        // SAFETY: the nest level is popped below on return, or by the enclosing
        // (sub)transaction's abort when `f` raises an error; set_config_option copies the
        // strings it is given.
        let nest_level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            set(
                name,
                value,
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucAction::GUC_ACTION_SAVE,
            );
        }
        let result = f();
        // isCommit = false: restore every value saved at this nest level or above, including
        // values set with GUC_ACTION_SET, which a commit would keep.
        pg_sys::AtEOXact_GUC(false, nest_level);
        result
    }
}

/// Set `name` to `value` until the end of the transaction (as `SET LOCAL`), with superuser
/// rights: for pg_softfk's own internal settings.
pub fn set_for_transaction(name: &CStr, value: &str) {
    set(
        name,
        value,
        pg_sys::GucContext::PGC_SUSET,
        pg_sys::GucAction::GUC_ACTION_LOCAL,
    );
}

/// Set `name` to `value` for the rest of the session, as a session's `SET` would, with
/// superuser rights: outranks database and role defaults (`ALTER DATABASE ... SET`), and a
/// function's `SET` clause or [`with_settings`] still override it.
pub fn set_for_session(name: &CStr, value: &str) {
    set(
        name,
        value,
        pg_sys::GucContext::PGC_SUSET,
        pg_sys::GucAction::GUC_ACTION_SET,
    );
}

/// One `set_config_option` call, as a session's SET would make it, in `context`.
fn set(
    name: &CStr,
    value: &str,
    context: pg_sys::GucContext::Type,
    action: pg_sys::GucAction::Type,
) {
    let value = CString::new(value).expect("a setting without NUL");
    // SAFETY: set_config_option copies the strings it is given; `action` says how long the
    // value lasts (SAVE: to the nest level's end, LOCAL: to the transaction's).
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            0,
            false,
        );
    }
}
