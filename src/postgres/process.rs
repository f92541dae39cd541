//! Facts about this backend process, read from PostgreSQL's process globals.

use std::time::{Duration, Instant};

use pgrx::pg_sys;

/// The database this process is connected to.
pub fn database_id() -> pg_sys::Oid {
    // SAFETY: set once when the process connects, never changed after.
    unsafe { pg_sys::MyDatabaseId }
}

/// The current user (the role whose rights apply now, after SECURITY DEFINER or a switch).
pub fn current_user() -> pg_sys::Oid {
    // SAFETY: reads the backend's current user id.
    unsafe { pg_sys::GetUserId() }
}

/// Whether this process is a background worker (not a client's backend).
pub fn is_background_worker() -> bool {
    // SAFETY: set once at process start.
    unsafe { pg_sys::MyBackendType == pg_sys::BackendType::B_BG_WORKER }
}

/// Whether this process has been told to terminate (SIGTERM, pg_terminate_backend): the
/// next interrupt check ends it, and nothing should be retried meanwhile.
pub fn termination_requested() -> bool {
    // SAFETY: a flag the signal handler sets; reading it is what CHECK_FOR_INTERRUPTS does.
    unsafe { pg_sys::ProcDiePending != 0 }
}

/// This process's number in the PGPROC array, by which others set its latch.
pub fn procno() -> i32 {
    // SAFETY: set for every process connected to shared memory, which background workers and
    // backends are before they run any of pg_softfk's code.
    unsafe {
        // (PostgreSQL 17 replaced PGPROC.pgprocno with the global MyProcNumber.)
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        return (*pg_sys::MyProc).pgprocno;
        #[cfg(not(any(feature = "pg15", feature = "pg16")))]
        return pg_sys::MyProcNumber;
    }
}

/// This process's PID.
pub fn pid() -> i32 {
    // SAFETY: set once at process start.
    unsafe { pg_sys::MyProcPid }
}

/// What this process is doing, as `pg_stat_activity` shows it (`state` and `query`): `None`
/// for idle. A background worker's way of saying which step it is at.
pub fn report_activity(activity: Option<&str>) {
    let text = std::ffi::CString::new(activity.unwrap_or("")).unwrap_or_default();
    let state = if activity.is_some() {
        pg_sys::BackendState::STATE_RUNNING
    } else {
        pg_sys::BackendState::STATE_IDLE
    };
    // SAFETY: pgstat_report_activity copies the NUL-terminated string into shared memory.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) }
}

/// Wait for `duration` whatever sets the latch meanwhile (a throttle, not a nap): interrupts
/// are served (SIGTERM ends the process), a reload of the configuration file is read, and a
/// latch set during the wait is set again at its end, so that no wake-up is lost. Outside
/// any transaction.
pub fn pause(duration: Duration) {
    let deadline = Instant::now() + duration;
    let mut woken = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // SAFETY: waits on this process's own latch and resets it, as a worker's loop does.
        unsafe {
            let events = pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                left.as_millis().max(1) as std::ffi::c_long,
                pg_sys::PG_WAIT_EXTENSION,
            );
            if events & pg_sys::WL_LATCH_SET as i32 != 0 {
                pg_sys::ResetLatch(pg_sys::MyLatch);
                woken = true;
            }
        }
        // (A reload is read now: it may change the very setting that paces this.)
        serve_signals();
    }
    if woken {
        // SAFETY: sets this process's own latch.
        unsafe { pg_sys::SetLatch(pg_sys::MyLatch) }
    }
}

/// What a worker does between waits, outside any transaction: serve interrupts (SIGTERM ends
/// the process), then read the configuration file again if a reload (SIGHUP) is pending.
pub fn serve_signals() {
    // SAFETY: called outside any transaction and critical section, as core's workers do.
    unsafe {
        pg_sys::check_for_interrupts!();
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}
