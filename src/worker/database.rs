//! A purge worker: serves one database while it has work. It runs the purge until no work
//! is ready, sleeps on its latch for `pg_softfk.naptime`, and again; it leaves the database
//! once the queue is empty and nothing has come for `pg_softfk.worker_idle_timeout`, or
//! when the launcher asks it to make room for a database that waits.

use std::time::{Duration, Instant};

use pgrx::prelude::*;

use super::shared::{self, State};
use super::{handle_signals, naptime, sleep};
use crate::postgres::guc::{set_for_session, SAFE_SEARCH_PATH};
use crate::postgres::process;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::read_one;
use crate::postgres::transaction::{in_transaction, Scope};
use crate::purge;
use crate::settings::{PURGE_WORKER, SWEEP_INTERVAL, WORKER_IDLE_TIMEOUT};

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn softfk_purge_worker_main(arg: pg_sys::Datum) {
    let (database, generation) = shared::from_worker_argument(arg);
    handle_signals();
    // SAFETY: the exit callback is a function with the signature PostgreSQL expects, and
    // its argument a plain integer; connecting is what a background worker's main does first.
    unsafe {
        // Registered before connecting: a worker that fails to connect (its database is being
        // dropped) gives its slot back too; and it runs after the callbacks connecting
        // registers (see leave_slot).
        pg_sys::on_shmem_exit(Some(shared::leave_slot), arg);
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
    // None: held off meanwhile (a DROP DATABASE is on its way).
    let Some(first_look) = shared::connected(database, generation) else {
        return;
    };
    // A first look leaves at once when it finds nothing to do.
    let mut only_looking = first_look;
    let mut last_work = Instant::now();
    let mut idle_as_replica = false;
    loop {
        process::serve_signals();
        shared::forget_wakeup(database);
        if !extension_exists() {
            shared::leave(database, State::NoExtension);
            return;
        }
        // A logical replication subscriber gets the publisher's purge as replicated changes
        // (the softfk tables are published with FOR ALL TABLES); it purges nothing itself.
        let replica = in_worker_transaction(purge::replica_of_a_publisher);
        if replica != idle_as_replica {
            idle_as_replica = replica;
            if replica {
                log!("pg_softfk: the purge worker of this database stays idle: softfk.deletion is replicated from a publisher, whose purge arrives here");
            }
        }
        if !PURGE_WORKER.get() {
            // Turned off: leave, and say whether the queue holds keys, so that the launcher
            // starts a worker for them once it is turned on again.
            let waiting = !replica && in_worker_transaction(queue_holds_keys);
            shared::leave(database, if waiting { State::Waiting } else { State::Idle });
            return;
        }
        let mut work_left = false;
        if !replica {
            process::report_activity(Some("pg_softfk purge: looking at the queue"));
            // (A queue row that keeps failing waits on its own backoff, src/purge/backoff.rs: it
            // neither fills the run log at every naptime nor slows the rest of the queue.)
            let make_room = || shared::asked_to_make_room(database);
            if let Some(report) = purge::run(purge::Mode::Worker, &make_room) {
                purge::end_worker_run();
                if report.batches > 0 {
                    last_work = Instant::now();
                    only_looking = false;
                }
            }
            if shared::sweep_due(database, SWEEP_INTERVAL.get() as i64) {
                queue_sweep();
            }
            // Keys waiting for their final pass, or for a backoff: the worker stays for them.
            work_left = in_worker_transaction(queue_holds_keys);
            process::report_activity(None);
        }
        if work_left {
            last_work = Instant::now();
            only_looking = false;
        }
        let idle_timeout = if only_looking {
            Duration::ZERO
        } else {
            Duration::from_millis(WORKER_IDLE_TIMEOUT.get() as u64)
        };
        if shared::asked_to_make_room(database) {
            shared::leave(
                database,
                if work_left {
                    State::Waiting
                } else {
                    State::Idle
                },
            );
            return;
        }
        // Nothing to do: leave after the idle timeout, or at once when a database waits.
        let idle_for = last_work.elapsed();
        if !work_left && (idle_for >= idle_timeout || shared::others_wait()) {
            shared::leave(database, State::Idle);
            return;
        }
        sleep(
            naptime().min(
                idle_timeout
                    .saturating_sub(idle_for)
                    .max(Duration::from_millis(10)),
            ),
        );
    }
}

/// Whether the queue holds anything, ready or not.
fn queue_holds_keys() -> bool {
    as_extension_owner(|| read_one::<bool>("SELECT EXISTS (SELECT FROM softfk.deletion)", &[]))
        .unwrap_or(false)
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
