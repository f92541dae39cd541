//! A purge worker: one per database with the extension. It runs the purge until no work is
//! ready, sleeps on its latch for `pg_softfk.naptime`, and again.

use std::time::{Duration, Instant};

use pgrx::prelude::*;

use super::shared::{leave_slot, mark_no_extension, Slot, State, SHARED};
use super::{check_signals, handle_signals, naptime, sleep};
use crate::postgres::guc::{set_for_session, SAFE_SEARCH_PATH};
use crate::postgres::process;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::read_one;
use crate::postgres::transaction::{in_transaction, Scope};
use crate::purge;
use crate::settings::{PURGE_WORKER, SWEEP_INTERVAL};

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn softfk_purge_worker_main(arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    handle_signals();
    // SAFETY: the exit callback is a function with the signature PostgreSQL expects, and
    // its argument a plain integer; connecting is what a background worker's main does first.
    unsafe {
        // Registered before connecting: a worker that fails to connect (its database is being
        // dropped) gives its slot back too.
        pg_sys::before_shmem_exit(Some(leave_slot), pg_sys::Datum::from(database));
        pg_sys::BackgroundWorkerInitializeConnectionByOid(
            pg_sys::Oid::from(database),
            pg_sys::InvalidOid,
            0,
        );
    }
    // The worker runs as a superuser in a database others own: none of its queries may
    // resolve names through a search_path the database's owner set (ALTER DATABASE ... SET
    // search_path). Nor may the database's defaults change how a batch runs: the final pass
    // must see what committed after the batch began (READ COMMITTED), and write. Set as a
    // session's SET would be, which outranks database and role defaults and still lets each
    // purge statement set its own (src/postgres/guc.rs), and a function's SET clause work as
    // anywhere else.
    for (name, value) in [
        SAFE_SEARCH_PATH,
        (c"default_transaction_isolation", "read committed"),
        (c"default_transaction_read_only", "off"),
    ] {
        set_for_session(name, value);
    }
    {
        let mut shared = SHARED.exclusive();
        let procno = process::procno();
        match shared.slot_of(database) {
            Some(slot) => {
                *slot = Slot {
                    database,
                    state: State::Running,
                    procno,
                }
            }
            None => return, // the launcher gave up on it meanwhile
        }
    }
    let mut last_sweep = Instant::now();
    let mut idle_as_replica = false;
    loop {
        check_signals();
        if !extension_exists() {
            mark_no_extension(database);
            return;
        }
        // A logical replication subscriber gets the publisher's purge as replicated changes
        // (the softfk tables are published with FOR ALL TABLES); it purges nothing itself.
        let replica = PURGE_WORKER.get() && in_worker_transaction(purge::replica_of_a_publisher);
        if replica != idle_as_replica {
            idle_as_replica = replica;
            if replica {
                log!("pg_softfk: the purge worker of this database stays idle: softfk.deletion is replicated from a publisher, whose purge arrives here");
            }
        }
        if PURGE_WORKER.get() && !replica {
            activity(c"purging");
            // (A queue row that keeps failing waits on its own backoff, src/purge/backoff.rs: it
            // neither fills the run log at every naptime nor slows the rest of the queue.)
            if purge::run(purge::Mode::Worker).is_some() {
                purge::end_worker_run();
            }
            let interval = SWEEP_INTERVAL.get();
            if interval > 0 && last_sweep.elapsed() >= Duration::from_secs(interval as u64) {
                last_sweep = Instant::now();
                queue_sweep();
            }
            activity(c"");
        }
        sleep(naptime());
    }
}

/// How the worker shows in pg_stat_activity: `purging`, or idle.
fn activity(what: &std::ffi::CStr) {
    // SAFETY: pgstat_report_activity copies the NUL-terminated string into shared memory.
    unsafe {
        let state = if what.is_empty() {
            pg_sys::BackendState::STATE_IDLE
        } else {
            pg_sys::BackendState::STATE_RUNNING
        };
        pg_sys::pgstat_report_activity(state, what.as_ptr());
    }
}

fn extension_exists() -> bool {
    in_worker_transaction(|| {
        read_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_softfk')",
            &[],
        )
        .unwrap_or(false)
    })
}

/// A sweep: every parent column queued for a full anti-join, purged like a TRUNCATE.
fn queue_sweep() {
    in_worker_transaction(|| as_extension_owner(purge::queue::queue_sweep));
    // SAFETY: sets this process's own latch, so that the purge starts at once.
    unsafe { pg_sys::SetLatch(pg_sys::MyLatch) };
}

/// A transaction of the worker's own, outside a purge run; an error ends the worker (the
/// launcher starts a new one).
fn in_worker_transaction<R>(f: impl FnOnce() -> R) -> R {
    in_transaction(Scope::Transaction, f).unwrap_or_else(|e| e.rethrow())
}
