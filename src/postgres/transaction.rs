//! Transactions run from Rust, and the end-of-transaction callbacks, behind one registration.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{PgSqlErrorCode, PgTryBuilder};

/// Where [`in_transaction`] runs its closure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// A transaction of its own: a background worker between transactions.
    Transaction,
    /// A subtransaction of the caller's transaction: a SQL function.
    Subtransaction,
}

/// An error caught by [`in_transaction`], after its (sub)transaction was rolled back.
pub struct Failure(Box<CaughtError>);

impl Failure {
    pub fn sql_error_code(&self) -> PgSqlErrorCode {
        match &*self.0 {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                report.sql_error_code()
            }
            CaughtError::RustPanic { .. } => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match &*self.0 {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                report.message().to_string()
            }
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
        }
    }

    /// Raise the error again, as if it had never been caught.
    pub fn rethrow(self) -> ! {
        (*self.0).rethrow()
    }
}

/// Run `f` in a transaction of its own or a subtransaction, committing it when `f` returns
/// and rolling it back when `f` raises an error (returned as a [`Failure`]).
///
/// A transaction of its own runs at READ COMMITTED and read-write, whatever the session's
/// defaults say (and whatever a trigger set them to), as `SET TRANSACTION` would before its
/// first snapshot: the purge's final pass must see what committed after its batch began, and
/// write.
pub fn in_transaction<R>(scope: Scope, f: impl FnOnce() -> R) -> Result<R, Failure> {
    let f = AssertUnwindSafe(f);
    // SAFETY: the transaction or subtransaction started here is committed or released on the
    // success path inside the guarded closure, and aborted or rolled back below when it
    // raised; memory context and resource owner are put back as they were either way, as
    // core's PL handlers do around BeginInternalSubTransaction.
    unsafe {
        let memory_context = pg_sys::CurrentMemoryContext;
        let resource_owner = pg_sys::CurrentResourceOwner;
        // (An error raised in Rust may have pushed a context callback: src/postgres/error.rs.)
        let error_context = pg_sys::error_context_stack;
        match scope {
            Scope::Transaction => {
                pg_sys::SetCurrentStatementStartTimestamp();
                pg_sys::StartTransactionCommand();
                pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
                pg_sys::XactReadOnly = false;
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            Scope::Subtransaction => {
                pg_sys::BeginInternalSubTransaction(std::ptr::null());
                pg_sys::MemoryContextSwitchTo(memory_context);
            }
        }
        let result = PgTryBuilder::new(AssertUnwindSafe(move || {
            let value = (f.0)();
            match scope {
                Scope::Transaction => {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommitTransactionCommand();
                }
                Scope::Subtransaction => pg_sys::ReleaseCurrentSubTransaction(),
            }
            Ok(value)
        }))
        .catch_others(|error| Err(Failure(Box::new(error))))
        .catch_rust_panic(|error| Err(Failure(Box::new(error))))
        .execute();
        if result.is_err() {
            match scope {
                Scope::Transaction => pg_sys::AbortCurrentTransaction(),
                Scope::Subtransaction => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
            }
        }
        pg_sys::MemoryContextSwitchTo(memory_context);
        pg_sys::CurrentResourceOwner = resource_owner;
        pg_sys::error_context_stack = error_context;
        result
    }
}

/// How a transaction ended, for [`on_transaction_end`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TransactionEnd {
    /// Committed: others see its changes now.
    Commit,
    Abort,
    /// PREPARE TRANSACTION: this session is done with it; it commits or aborts later.
    Prepare,
}

thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    static AT_END: RefCell<Vec<fn(TransactionEnd)>> = const { RefCell::new(Vec::new()) };
}

/// Call `handler` at the end of every transaction of this backend from now on. Register it
/// once per backend (the caller keeps a flag). It must not raise an error.
pub fn on_transaction_end(handler: fn(TransactionEnd)) {
    register();
    AT_END.with_borrow_mut(|handlers| handlers.push(handler));
}

/// One callback per backend, kept for good: PostgreSQL has no way to unregister one
/// from inside a callback.
fn register() {
    if REGISTERED.get() {
        return;
    }
    // SAFETY: the callback is a function with the signature PostgreSQL expects, alive for
    // the life of the process; it takes no argument.
    unsafe {
        pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
    }
    REGISTERED.set(true);
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    let end = match event {
        // COMMIT comes after the transaction became visible to others.
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => TransactionEnd::Commit,
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => TransactionEnd::Abort,
        XACT_EVENT_PREPARE => TransactionEnd::Prepare,
        _ => return,
    };
    // (Copied out: a handler may register another.)
    for handler in AT_END.with_borrow(|handlers| handlers.clone()) {
        handler(end);
    }
}
