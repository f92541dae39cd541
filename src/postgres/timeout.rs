//! The statement timeout, armed around one statement a background worker runs itself: core
//! arms it only around statements that come from a client.

/// `STATEMENT_TIMEOUT` of `TimeoutId` (utils/timeout.h), which pgrx's bindings leave out. Its
/// value is the same in every supported major; the `#[pg_test]`
/// `statement_timeout_id_is_statement_timeout` proves it on each one they run on, since a
/// wrong id would cancel with another timeout's message.
const STATEMENT_TIMEOUT: i32 = 3;

extern "C-unwind" {
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
}

/// The statement timeout, disarmed when dropped: after the statement, or when an error
/// unwinds past it (a timer left armed would cancel whatever runs next).
pub struct StatementTimeout(());

impl StatementTimeout {
    pub fn arm(milliseconds: i32) -> StatementTimeout {
        // SAFETY: registering a timer for a timeout id core registered at backend start; the
        // guard returned disarms it.
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, milliseconds) };
        StatementTimeout(())
    }
}

impl Drop for StatementTimeout {
    fn drop(&mut self) {
        // SAFETY: disarming a registered timeout is always allowed, armed or not.
        unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
    }
}
