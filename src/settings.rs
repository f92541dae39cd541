//! Running code with PostgreSQL settings changed for its duration only.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// The search_path every query pg_softfk writes runs under when it acts for someone else:
/// only the catalogs (and the session's own temporary schema, last). With a caller's path, a
/// function or operator the caller created in one of its schemas, matching our arguments
/// better than the built-in one, would run with the rights of the extension's owner or the
/// child's owner (CVE-2018-1058's pattern).
pub const SAFE_SEARCH_PATH: (&CStr, &str) = (c"search_path", "pg_catalog, pg_temp");

/// Run `f` with each `(setting, value)` set as by `SET`; the old values come back when `f`
/// returns, and on error with the (sub)transaction, as for a function's `SET` clause.
pub fn with_settings<R>(settings: &[(&CStr, &str)], f: impl FnOnce() -> R) -> R {
    unsafe {
        let nest_level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            let value = CString::new(*value).expect("a setting without NUL");
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let result = f();
        pg_sys::AtEOXact_GUC(true, nest_level);
        result
    }
}
