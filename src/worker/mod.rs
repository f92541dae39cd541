//! The background workers that run the purge (src/purge/) in every database where the
//! extension is created, with no setting but `shared_preload_libraries = 'pg_softfk'`.
//!
//! - The *launcher* (one per cluster, `pg_softfk launcher` in pg_stat_activity) connects to no
//!   database. It lists the databases that accept connections and starts a purge worker for
//!   each one it has not seen yet, then sleeps on its latch.
//! - A *purge worker* (`pg_softfk purge`) connects to one database. Without the extension there
//!   it marks the database as such and exits; the launcher leaves that database alone until
//!   `CREATE EXTENSION pg_softfk` commits and wakes it. With the extension, it loops: run the
//!   purge until no work is ready, sleep on its latch for `pg_softfk.naptime`, again. A
//!   transaction that deleted parent keys wakes it when it commits (src/capture.rs), so the
//!   purge starts within milliseconds; the naptime only paces final passes and sweeps.
//!
//! Both start once recovery has finished: on a standby they do not run until promotion.
//! SIGTERM stops a worker at once (the running batch rolls back and is redone later), SIGHUP
//! makes it re-read its settings.
//!
//! Shared memory holds one slot per database: who runs it (to wake it), or that the
//! database has no extension.

mod database;
mod launcher;
mod shared;

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

use crate::settings::NAPTIME;
pub use shared::{is_loaded, wake_database};

/// Called by _PG_init: shared memory and the launcher, only when loaded by
/// shared_preload_libraries.
pub fn init() {
    // SAFETY: reads a flag the postmaster sets while it loads shared_preload_libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    shared::init();
    BackgroundWorkerBuilder::new("pg_softfk launcher")
        .set_type("pg_softfk launcher")
        .set_library("pg_softfk")
        .set_function("softfk_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Sleep until woken, a signal, or `timeout`; handle SIGTERM (exit) and SIGHUP (reload).
pub(crate) fn sleep(timeout: Duration) {
    // SAFETY: waits on this process's own latch, then resets it, as every worker loop does.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_signals();
}

pub(crate) fn check_signals() {
    // SAFETY: what a worker's loop does between waits: interrupts (SIGTERM exits), then a
    // pending reload of the configuration file, outside any transaction.
    unsafe {
        pg_sys::check_for_interrupts!();
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// SIGTERM: PostgreSQL's own handler, so that a running statement is cancelled at once and
/// the transaction rolls back. SIGHUP: re-read postgresql.conf at the next check.
pub(crate) fn handle_signals() {
    // SAFETY: installs core's own handlers, as a background worker does before unblocking
    // signals.
    unsafe {
        // (PostgreSQL 18 made pqsignal a macro for the backend's pqsignal_be.)
        #[cfg(not(feature = "pg18"))]
        use pg_sys::pqsignal;
        #[cfg(feature = "pg18")]
        use pg_sys::pqsignal_be as pqsignal;
        pqsignal(pg_sys::SIGHUP as i32, Some(SignalHandlerForConfigReload));
        pqsignal(pg_sys::SIGTERM as i32, Some(die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

// The signal handlers themselves (pgrx's bindings wrap them as Rust functions).
extern "C-unwind" {
    fn SignalHandlerForConfigReload(signal: std::ffi::c_int);
    fn die(signal: std::ffi::c_int);
}

pub(crate) fn naptime() -> Duration {
    Duration::from_millis(NAPTIME.get() as u64)
}
