//! Raising PostgreSQL errors (and notices) with a SQLSTATE, a DETAIL and a HINT, the way core's ereport does.

use std::cell::RefCell;
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// A message about to be sent: add a detail or hint, then `raise()` an error or `send()` a
/// notice.
pub struct Message(ErrorReport, PgLogLevel);

pub fn error(code: PgSqlErrorCode, message: impl Into<String>) -> Message {
    Message(
        ErrorReport::new(code, message.into(), "pg_softfk"),
        PgLogLevel::ERROR,
    )
}

pub fn notice(message: impl Into<String>) -> Message {
    Message(
        error(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message).0,
        PgLogLevel::NOTICE,
    )
}

pub fn warning(message: impl Into<String>) -> Message {
    Message(
        error(PgSqlErrorCode::ERRCODE_WARNING, message).0,
        PgLogLevel::WARNING,
    )
}

impl Message {
    pub fn detail(self, detail: impl Into<String>) -> Self {
        Message(self.0.set_detail(detail), self.1)
    }

    pub fn hint(self, hint: impl Into<String>) -> Self {
        Message(self.0.set_hint(hint), self.1)
    }

    /// A [`notice`] or [`warning`]: tells the client and carries on.
    pub fn send(self) {
        self.0.report(self.1);
    }

    /// ERROR naming the table and constraint it is about, in the error's fields (schema,
    /// table, constraint name: what core's foreign key errors carry, and what drivers expose,
    /// e.g. psycopg's `diag.constraint_name`).
    pub fn raise_on_constraint(self, schema: &str, table: &str, constraint: &str) -> ! {
        let field = |s: &str| CString::new(s).unwrap_or_default();
        OBJECT_FIELDS.set(Some([field(schema), field(table), field(constraint)]));
        // pgrx reports the error after unwinding to the function's guard, with the fields it
        // knows (message, detail, hint); core asks the error context callbacks for more while
        // it reports. So the fields go in through a callback, pushed here and left for whoever
        // catches the error (which puts error_context_stack back as it was before).
        // SAFETY: the callback record is allocated once per process and never freed; it is
        // pushed only when it is not on the stack already (no cycle), and its function takes
        // no argument.
        unsafe {
            let record = OBJECT_FIELDS_CALLBACK.with(|record| *record);
            let mut entry = pg_sys::error_context_stack;
            while !entry.is_null() && entry != record {
                entry = (*entry).previous;
            }
            if entry.is_null() {
                (*record).previous = pg_sys::error_context_stack;
                pg_sys::error_context_stack = record;
            }
        }
        self.raise()
    }

    /// ERROR: aborts the transaction; nothing the caller did in it is kept.
    pub fn raise(self) -> ! {
        self.0.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

thread_local! {
    /// Schema, table and constraint of the error being raised by raise_on_constraint.
    static OBJECT_FIELDS: RefCell<Option<[CString; 3]>> = const { RefCell::new(None) };
    static OBJECT_FIELDS_CALLBACK: *mut pg_sys::ErrorContextCallback =
        Box::leak(Box::new(pg_sys::ErrorContextCallback {
            previous: std::ptr::null_mut(),
            callback: Some(add_object_fields),
            arg: std::ptr::null_mut(),
        }));
}

/// The error context callback of raise_on_constraint: runs while core reports the error.
unsafe extern "C-unwind" fn add_object_fields(_arg: *mut std::ffi::c_void) {
    if let Some([schema, table, constraint]) = OBJECT_FIELDS.take() {
        // SAFETY: called by errfinish with the error being reported; err_generic_string copies
        // each NUL-terminated string into it.
        unsafe {
            pg_sys::err_generic_string(pg_sys::PG_DIAG_SCHEMA_NAME as i32, schema.as_ptr());
            pg_sys::err_generic_string(pg_sys::PG_DIAG_TABLE_NAME as i32, table.as_ptr());
            pg_sys::err_generic_string(pg_sys::PG_DIAG_CONSTRAINT_NAME as i32, constraint.as_ptr());
        }
    }
}

/// The argument must not be NULL (SQLSTATE 22004, as core says for NULL where a value is required).
pub fn required<T>(value: Option<T>, argument: &str) -> T {
    value.unwrap_or_else(|| {
        error(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{argument} must not be NULL"),
        )
        .raise()
    })
}

/// The five-character SQLSTATE of an error code (`40001`), as core's `unpack_sql_state` writes it.
pub fn sqlstate(code: PgSqlErrorCode) -> String {
    // SAFETY: unpack_sql_state writes into a static buffer and returns it; it is copied at once.
    unsafe { CStr::from_ptr(pg_sys::unpack_sql_state(code as i32)) }
        .to_string_lossy()
        .into_owned()
}
