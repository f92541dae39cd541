//! Raising PostgreSQL errors (and notices) with a SQLSTATE, a DETAIL and a HINT, the way core's ereport does.

use std::ffi::CStr;

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

    /// ERROR: aborts the transaction; nothing the caller did in it is kept.
    pub fn raise(self) -> ! {
        self.0.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
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
