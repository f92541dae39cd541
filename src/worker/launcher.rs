//! The launcher: one per cluster, connected to no database. It starts a purge worker for
//! each database that accepts connections and has none yet, then sleeps on its latch.

use std::time::Duration;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;

use super::shared::{release_slot, Slot, State, SHARED};
use super::{handle_signals, naptime, sleep};
use crate::postgres::process;

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
        let to_start: Vec<u32> = {
            let mut shared = SHARED.exclusive();
            // Forget databases that were dropped (a worker still running there gives its slot
            // back when it exits).
            for slot in shared.slots.iter_mut() {
                if slot.state == State::NoExtension && !databases.contains(&slot.database) {
                    *slot = Slot::default();
                }
            }
            let mut starting = Vec::new();
            for &database in &databases {
                if shared.slot_of(database).is_some() {
                    continue;
                }
                if let Some(slot) = shared.slots.iter_mut().find(|s| s.state == State::Free) {
                    *slot = Slot {
                        database,
                        state: State::Starting,
                        procno: -1,
                    };
                    starting.push(database);
                }
            }
            starting
        };
        for database in to_start {
            start_worker(database);
        }
        sleep(naptime().max(Duration::from_secs(1)));
    }
}

fn start_worker(database: u32) {
    let started = BackgroundWorkerBuilder::new(&format!("pg_softfk purge {database}"))
        .set_type("pg_softfk purge")
        .set_library("pg_softfk")
        .set_function("softfk_purge_worker_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(database)))
        .set_notify_pid(process::pid())
        .load_dynamic();
    if started.is_err() {
        // No free background worker slot (max_worker_processes): try again next round.
        release_slot(database);
        pgrx::warning!(
            "pg_softfk: could not start the purge worker for database {database}: no free background worker slot"
        );
    }
}

/// Databases that accept connections, templates excepted (a worker connected to a template
/// would make CREATE DATABASE fail).
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
            if (*form).datallowconn && !(*form).datistemplate {
                found.push((*form).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
        pg_sys::CommitTransactionCommand();
    }
    found
}
