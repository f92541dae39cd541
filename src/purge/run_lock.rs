//! One purge run at a time per database: the worker and `softfk_purge()` take the run lock
//! before they take any queue row.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::Mode;
use crate::postgres::error::error;
use crate::postgres::process;
use crate::postgres::spi::read_one;

/// The lock that makes runs exclusive per database. An advisory lock, but in a key space no
/// SQL function reaches: `pg_advisory_lock(int8)` and `(int4, int4)` set the tag's fourth
/// field to 1 and 2; this one is [`RUN_LOCK_KIND`]. So no role can stop the purge by holding
/// it; only a run of the purge itself (the worker, or softfk_purge(), which only the
/// extension's owner and roles it grants may call) holds it. It shows in pg_locks as an
/// advisory lock with objid = softfk.purge_run's oid and objsubid = [`RUN_LOCK_KIND`].
fn run_lock_tag() -> pg_sys::LOCKTAG {
    let table = read_one::<pg_sys::Oid>(
        "SELECT 'softfk.purge_run'::pg_catalog.regclass::pg_catalog.oid",
        &[],
    )
    .expect("softfk.purge_run exists");
    pg_sys::LOCKTAG {
        locktag_field1: process::database_id().to_u32(),
        locktag_field2: 0,
        locktag_field3: table.to_u32(),
        locktag_field4: RUN_LOCK_KIND,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// The fourth field of the run lock's tag: 'sf'.
const RUN_LOCK_KIND: u16 = 0x7366;

thread_local! {
    /// The worker's run lock while it holds it (between begin_run and end_worker_run).
    static WORKER_RUN_LOCK: Cell<Option<pg_sys::LOCKTAG>> = const { Cell::new(None) };
}

/// Whether the worker still holds its run lock, taking it again if it can. A child's trigger
/// running in the worker's session can release it (`pg_advisory_unlock_all()` reaches every
/// advisory lock of the session): then a second run could overlap this one.
pub fn worker_still_holds_run_lock() -> bool {
    let Some(tag) = WORKER_RUN_LOCK.get() else {
        return true;
    };
    let exclusive = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: `tag` is the complete tag begin_run() took the session lock with.
    unsafe {
        // (PostgreSQL 17 added LockHeldByMe's third argument: "or a stronger mode".)
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        let held = pg_sys::LockHeldByMe(&tag, exclusive);
        #[cfg(not(any(feature = "pg15", feature = "pg16")))]
        let held = pg_sys::LockHeldByMe(&tag, exclusive, false);
        held || pg_sys::LockAcquire(&tag, exclusive, true, true)
            != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    }
}

/// Take the run lock: the worker holds it for the session and gives way when it is taken;
/// softfk_purge() holds it for its transaction and waits.
pub fn begin_run(mode: Mode) -> impl FnOnce() -> bool {
    move || {
        let tag = run_lock_tag();
        let exclusive = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
        // SAFETY: `tag` is a complete lock tag; a session lock (worker) is released by
        // end_worker_run() or at process exit, a transaction lock at the transaction's end.
        let result = unsafe {
            match mode {
                Mode::Worker => pg_sys::LockAcquire(&tag, exclusive, true, true),
                Mode::Function => pg_sys::LockAcquire(&tag, exclusive, false, false),
            }
        };
        if result == pg_sys::LockAcquireResult::LOCKACQUIRE_ALREADY_HELD && mode == Mode::Function {
            // softfk_purge() called inside a run (by a child's trigger): no run in a run.
            error(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                "softfk_purge() cannot run inside a purge run",
            )
            .raise();
        }
        let taken = result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL;
        if taken && mode == Mode::Worker {
            WORKER_RUN_LOCK.set(Some(tag));
        }
        taken
    }
}

/// The worker gives the run lock back after its run.
pub fn end_worker_run() {
    if let Some(tag) = WORKER_RUN_LOCK.take() {
        // SAFETY: the session lock begin_run() took with this tag and mode (a warning, not
        // an error, if a trigger released it meanwhile).
        unsafe { pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, true) };
    }
}
