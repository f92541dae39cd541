//! Quoting names and values into SQL text: the one place pg_softfk does it, with core's own
//! rules (`quote_identifier`, `quote_literal`), so generated SQL and messages agree.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// An identifier as SQL must write it: bare when it can be (`user_id`), double-quoted
/// otherwise (`"User Id"`, `"select"`), as `format('%I')` and core's messages write it.
pub fn identifier(name: &str) -> String {
    let name = CString::new(name).expect("an identifier without NUL");
    // SAFETY: quote_identifier reads the NUL-terminated string and returns either it or a
    // palloc'd copy, valid until the current memory context is reset; it is copied at once.
    unsafe {
        CStr::from_ptr(pg_sys::quote_identifier(name.as_ptr()))
            .to_string_lossy()
            .into_owned()
    }
}

/// A string literal (`'it''s'`), as `format('%L')` writes a non-NULL value.
pub fn literal(value: &str) -> String {
    let value = CString::new(value).expect("a literal without NUL");
    // SAFETY: quote_literal_cstr reads the NUL-terminated string and returns a palloc'd copy,
    // valid until the current memory context is reset; it is copied at once.
    unsafe {
        CStr::from_ptr(pg_sys::quote_literal_cstr(value.as_ptr()))
            .to_string_lossy()
            .into_owned()
    }
}
