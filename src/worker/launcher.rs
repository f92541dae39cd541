//! The launcher: one per cluster, connected to no database. It keeps at most
//! `pg_softfk.max_purge_workers` purge workers running, for the databases that want one, the
//! longest-waiting first; when databases wait and the pool is full, it asks workers that have
//! served their database for a while to make room.

use std::time::Duration;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;

use super::shared::{self, now, set_latch, Slot, State, SHARED};
use super::{handle_signals, sleep};
use crate::postgres::process;
use crate::settings::{MAX_PURGE_WORKERS, PURGE_WORKER};

/// How long a worker serves one database, at least, before it is asked to make room for
/// another that waits.
const FAIR_SHARE: Duration = Duration::from_secs(5);

/// How long a started worker may take to connect before the start is given up on (the
/// postmaster could not fork it, say) and the database waits again.
const STARTING_DEADLINE: Duration = Duration::from_secs(10);

/// How often a database with nothing to do is looked at again: the safety net for work that
/// no commit announced (rows loaded into the queue by pg_restore or COPY).
const LOOK_AGAIN: Duration = Duration::from_secs(60);

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn softfk_launcher_main(_arg: pg_sys::Datum) {
    handle_signals();
    // SAFETY: a background worker's first step, connecting to no database; MyProc is set.
    unsafe {
        pg_sys::BackgroundWorkerInitializeConnection(std::ptr::null(), std::ptr::null(), 0);
    }
    SHARED.exclusive().launcher_procno = process::procno();
    loop {
        let databases = databases();
        let (to_start, to_wake) = plan(&databases);
        for (database, generation, first_look) in to_start {
            start_worker(database, generation, first_look);
        }
        for procno in to_wake {
            set_latch(procno);
        }
        // (Anything urgent sets the latch: a deleting commit, a worker's exit, SIGHUP.)
        sleep(Duration::from_secs(1));
    }
}

/// One round: bring the slots up to date with the databases there are, and choose the
/// workers to start (database, generation, first look) and the ones to ask to make room.
fn plan(databases: &[u32]) -> (Vec<(u32, u32, bool)>, Vec<i32>) {
    let now = now();
    let micros = |d: Duration| d.as_micros() as i64;
    let mut shared = SHARED.exclusive();
    for slot in shared.slots.iter_mut() {
        match slot.state {
            // Dropped, or no longer joinable (a template now, or closed to connections).
            State::Idle | State::Waiting | State::NoExtension
                if !databases.contains(&slot.database) =>
            {
                *slot = Slot::default()
            }
            State::Idle if slot.next_sweep_at > 0 && slot.next_sweep_at <= now => {
                slot.want_worker(now)
            }
            State::Idle if now - slot.since >= micros(LOOK_AGAIN) => {
                slot.want_worker(now);
                slot.first_look = true;
            }
            State::Starting if now - slot.since >= micros(STARTING_DEADLINE) => {
                slot.enter(State::Waiting, now)
            }
            _ => {}
        }
    }
    // A database not seen before gets a first look: does it have the extension, and work?
    for &database in databases {
        if shared.slot_of(database).is_none() {
            if let Some(slot) = shared.slot_for(database) {
                slot.enter(State::Waiting, now);
                slot.first_look = true;
            }
        }
    }
    if !PURGE_WORKER.get() {
        return (Vec::new(), Vec::new());
    }
    let busy = shared.busy();
    let mut room = (MAX_PURGE_WORKERS.get().max(1) as usize).saturating_sub(busy);
    let mut waiting: Vec<usize> = (0..shared.slots.len())
        .filter(|&i| {
            let s = &shared.slots[i];
            s.state == State::Waiting && s.held_off_until <= now
        })
        .collect();
    waiting.sort_by_key(|&i| shared.slots[i].since);
    let mut to_start = Vec::new();
    let mut still_waiting = 0;
    for i in waiting {
        if room == 0 {
            still_waiting += 1;
            continue;
        }
        room -= 1;
        let slot = &mut shared.slots[i];
        slot.enter(State::Starting, now);
        slot.generation = slot.generation.wrapping_add(1);
        to_start.push((slot.database, slot.generation, slot.first_look));
    }
    // Make room, the longest-serving first, one worker per database that waits.
    let mut to_wake = Vec::new();
    if still_waiting > 0 {
        let mut serving: Vec<usize> = (0..shared.slots.len())
            .filter(|&i| {
                let s = &shared.slots[i];
                s.state == State::Connected
                    && !s.make_room
                    && now - s.since >= FAIR_SHARE.as_micros() as i64
            })
            .collect();
        serving.sort_by_key(|&i| shared.slots[i].since);
        for i in serving.into_iter().take(still_waiting) {
            shared.slots[i].make_room = true;
            to_wake.push(shared.slots[i].procno);
        }
    }
    (to_start, to_wake)
}

fn start_worker(database: u32, generation: u32, first_look: bool) {
    let started = BackgroundWorkerBuilder::new(&format!("pg_softfk purge {database}"))
        .set_type("pg_softfk purge")
        .set_library("pg_softfk")
        .set_function("softfk_purge_worker_main")
        .enable_spi_access()
        .set_argument(Some(shared::worker_argument(database, generation)))
        .set_notify_pid(process::pid())
        .load_dynamic();
    if started.is_err() {
        // No free background worker slot (max_worker_processes): the database waits, and
        // softfk_status says why; the log says it once.
        if shared::start_failed(database) && !first_look {
            pgrx::warning!(
                "pg_softfk: could not start the purge worker for database {database}: no free background worker slot (max_worker_processes)"
            );
        }
    } else {
        shared::started(database);
    }
}

/// Databases that accept connections, templates and invalid databases (a DROP DATABASE
/// interrupted half-way) excepted: a worker connected to a template would make CREATE
/// DATABASE fail.
fn databases() -> Vec<u32> {
    let mut found = Vec::new();
    // SAFETY: a catalog scan of pg_database as core's autovacuum launcher makes one, in a
    // transaction of its own with a snapshot; each tuple is a pg_database row, whose fixed
    // part heap_tuple_get_struct reads, valid until the next heap_getnext.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        let _ = pg_sys::GetTransactionSnapshot();
        let relation =
            pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            // (datconnlimit -2: DATCONNLIMIT_INVALID_DB.)
            if (*form).datallowconn && !(*form).datistemplate && (*form).datconnlimit != -2 {
                found.push((*form).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
        pg_sys::CommitTransactionCommand();
    }
    found
}
