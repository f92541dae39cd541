//! The background workers that run the purge (src/purge/) in the databases where the
//! extension is created, with no setting but `shared_preload_libraries = 'pg_softfk'`.
//!
//! - The *launcher* (one per cluster, `pg_softfk launcher` in pg_stat_activity) connects to no
//!   database. It keeps a small pool of purge workers (`pg_softfk.max_purge_workers`, 2 by
//!   default) for the databases that want one, the longest-waiting first, then sleeps on its
//!   latch.
//! - A *purge worker* (`pg_softfk purge`) serves one database while it has work: it runs the
//!   purge until no work is ready, sleeps on its latch for `pg_softfk.naptime`, again; once the
//!   queue is empty and nothing came for `pg_softfk.worker_idle_timeout`, it leaves. A
//!   transaction that deleted parent keys wakes the database when it commits
//!   (src/capture.rs): its worker, or the launcher to start one, so the purge starts within
//!   milliseconds. A sweep due, or keys left for their final pass, bring a worker back too.
//!
//! Why a pool that comes and goes rather than one worker per database for good: a worker
//! connected to a database makes `DROP DATABASE` and `CREATE DATABASE ... TEMPLATE` of it fail
//! (Django's test runner does both), and each worker takes one of `max_worker_processes`
//! (8 by default, shared with parallel query): a seventh database would get none. The price is
//! a worker start (a few milliseconds) on the first delete after a quiet spell.
//!
//! Fairness: when databases wait and the pool is full, a worker that has served its database
//! for 5 seconds finishes its batch and makes room. A worker also gives way at once to the
//! commands that need its database without connections (give_way.rs).
//!
//! Both start once recovery has finished: on a standby they do not run until promotion.
//! SIGTERM stops a worker at once (the running batch rolls back and is redone later), SIGHUP
//! makes it re-read its settings.
//!
//! Shared memory holds one slot per database the launcher knows (shared.rs).

mod database;
mod give_way;
mod launcher;
mod shared;

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

use crate::postgres::process;
use crate::settings::{NAPTIME, PURGE_WORKER};
use shared::State;
pub use shared::{is_loaded, wake_database};

/// Called by _PG_init: shared memory and the launcher, only when loaded by
/// shared_preload_libraries.
pub fn init() {
    // SAFETY: reads a flag the postmaster sets while it loads shared_preload_libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    shared::init();
    give_way::init();
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
    process::serve_signals();
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

/// Who purges this database, as softfk_status shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Service {
    /// The library is not in shared_preload_libraries: no worker at all.
    NotLoaded,
    /// `pg_softfk.purge_worker` is off.
    TurnedOff,
    /// A worker is connected.
    Connected,
    /// A worker was started and is connecting.
    Starting,
    /// Work is due and every purge worker is busy elsewhere (or a DROP DATABASE holds the
    /// database off).
    WaitingForPurgeWorker,
    /// Work is due and no background worker slot is free (max_worker_processes).
    WaitingForBackgroundWorkerSlot,
    /// Nothing to do: no worker is connected, the next deleting commit starts one.
    NotConnected,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::NotLoaded => "not loaded (shared_preload_libraries)",
            Service::TurnedOff => "turned off (pg_softfk.purge_worker)",
            Service::Connected => "connected",
            Service::Starting => "starting",
            Service::WaitingForPurgeWorker => "waiting for a purge worker",
            Service::WaitingForBackgroundWorkerSlot => {
                "waiting for a background worker slot (max_worker_processes)"
            }
            Service::NotConnected => "not connected",
        }
    }
}

/// Who purges this database, and since when (timestamptz microseconds).
pub fn service() -> (Service, Option<i64>) {
    if !is_loaded() {
        return (Service::NotLoaded, None);
    }
    if !PURGE_WORKER.get() {
        return (Service::TurnedOff, None);
    }
    let Some(slot) = shared::slot_of_this_database() else {
        return (Service::NotConnected, None);
    };
    let service = match slot.state {
        State::Connected => Service::Connected,
        State::Starting => Service::Starting,
        State::Waiting if slot.no_background_worker_slot => Service::WaitingForBackgroundWorkerSlot,
        State::Waiting => Service::WaitingForPurgeWorker,
        State::Idle | State::NoExtension | State::Free => Service::NotConnected,
    };
    (service, Some(slot.since))
}
