//! The background workers that run the purge (src/purge.rs) in every database where the
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

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::purge;
use crate::registry::read_one;
use crate::settings::SAFE_SEARCH_PATH;

/// `pg_softfk.naptime`, in milliseconds.
pub static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_softfk.sweep_interval`, in seconds; 0 is off.
pub static SWEEP_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_softfk.purge_worker`.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Databases the launcher keeps track of: those served (each needs a background worker slot:
/// max_worker_processes) and those found without the extension.
const MAX_DATABASES: usize = 1024;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
enum State {
    #[default]
    Free,
    /// A worker was started for the database and has not reported yet.
    Starting,
    /// A worker serves the database; `procno` is its PGPROC.
    Running,
    /// The database has no pg_softfk; nobody serves it until CREATE EXTENSION.
    NoExtension,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    database: u32,
    state: State,
    procno: i32,
}

#[derive(Clone, Copy)]
struct Shared {
    launcher_procno: i32,
    slots: [Slot; MAX_DATABASES],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_procno: -1,
            slots: [Slot::default(); MAX_DATABASES],
        }
    }
}

unsafe impl PGRXSharedMemory for Shared {}

static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_softfk workers") };

static mut LOADED_AT_STARTUP: bool = false;

/// Called by _PG_init. Settings always; shared memory and the launcher only when loaded by
/// shared_preload_libraries.
pub fn init() {
    define_settings();
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    unsafe { LOADED_AT_STARTUP = true };
    pg_shmem_init!(SHARED);
    BackgroundWorkerBuilder::new("pg_softfk launcher")
        .set_type("pg_softfk launcher")
        .set_library("pg_softfk")
        .set_function("softfk_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn define_settings() {
    GucRegistry::define_bool_guc(
        c"pg_softfk.purge_worker",
        c"Whether the background worker purges the queue.",
        c"Off: the worker leaves the queue alone (softfk_purge() still runs the purge).",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.naptime",
        c"How long the purge worker sleeps when it is not woken.",
        c"A deleting commit wakes the worker at once; the naptime paces final passes, sweeps \
          and the launcher's look for new databases.",
        &NAPTIME,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.sweep_interval",
        c"How often the purge worker looks for orphans the capture did not see. 0 turns it off.",
        c"A sweep queues every parent for a full anti-join (the orphan_report() query), which \
          then purges like a TRUNCATE.",
        &SWEEP_INTERVAL,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// Whether this process can wake workers (the library was preloaded).
pub fn is_loaded() -> bool {
    unsafe { LOADED_AT_STARTUP }
}

/// Wake whoever serves this database: its worker, or the launcher to start one (after CREATE
/// EXTENSION, the database is no longer marked as having none).
pub fn wake_database() {
    if !is_loaded() {
        return;
    }
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let procno = {
        let mut shared = SHARED.exclusive();
        let launcher = shared.launcher_procno;
        match shared
            .slots
            .iter_mut()
            .find(|s| s.state != State::Free && s.database == database)
        {
            Some(slot) if slot.state == State::Running => slot.procno,
            Some(slot) if slot.state == State::NoExtension => {
                *slot = Slot::default();
                launcher
            }
            Some(_) => -1, // starting: it will look at the queue first thing
            None => launcher,
        }
    };
    set_latch(procno);
}

fn set_latch(procno: i32) {
    if procno >= 0 {
        unsafe {
            let proc = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
            pg_sys::SetLatch(&mut (*proc).procLatch);
        }
    }
}

/// Sleep until woken, a signal, or `timeout`; handle SIGTERM (exit) and SIGHUP (reload).
fn sleep(timeout: Duration) {
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

fn check_signals() {
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
fn handle_signals() {
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGHUP as i32, Some(SignalHandlerForConfigReload));
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

// The signal handlers themselves (pgrx's bindings wrap them as Rust functions).
extern "C-unwind" {
    fn SignalHandlerForConfigReload(signal: std::ffi::c_int);
    fn die(signal: std::ffi::c_int);
}

fn naptime() -> Duration {
    Duration::from_millis(NAPTIME.get() as u64)
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn softfk_launcher_main(_arg: pg_sys::Datum) {
    handle_signals();
    unsafe {
        pg_sys::BackgroundWorkerInitializeConnection(std::ptr::null(), std::ptr::null(), 0);
        SHARED.exclusive().launcher_procno = (*pg_sys::MyProc).pgprocno;
    }
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
                if shared
                    .slots
                    .iter()
                    .any(|s| s.state != State::Free && s.database == database)
                {
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
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic();
    if started.is_err() {
        // No free background worker slot (max_worker_processes): try again next round.
        release_slot(database);
        pgrx::warning!(
            "pg_softfk: could not start the purge worker for database {database}: no free background worker slot"
        );
    }
}

fn release_slot(database: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared
        .slots
        .iter_mut()
        .find(|s| s.state != State::Free && s.database == database)
    {
        *slot = Slot::default();
    }
}

/// Databases that accept connections, templates excepted (a worker connected to a template
/// would make CREATE DATABASE fail).
fn databases() -> Vec<u32> {
    let mut found = Vec::new();
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
            let header = (*tuple).t_data;
            let form = (header as *mut u8).add((*header).t_hoff as usize)
                as *const pg_sys::FormData_pg_database;
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

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn softfk_purge_worker_main(arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    handle_signals();
    unsafe {
        // Registered before connecting: a worker that fails to connect (its database is being
        // dropped) gives its slot back too.
        pg_sys::before_shmem_exit(Some(leave_slot), pg_sys::Datum::from(database));
        pg_sys::BackgroundWorkerInitializeConnectionByOid(
            pg_sys::Oid::from(database),
            pg_sys::InvalidOid,
            0,
        );
        // The worker runs as a superuser in a database others own: none of its queries may
        // resolve names through a search_path the database's owner set (ALTER DATABASE ...
        // SET search_path). Nor may the database's defaults change how a batch runs: the
        // final pass must see what committed after the batch began (READ COMMITTED), and
        // write. Set as a session's SET would be, which outranks database and role defaults
        // and still lets each purge statement set its own (src/settings.rs), and a function's
        // SET clause work as anywhere else.
        let (search_path, safe) = SAFE_SEARCH_PATH;
        for (name, value) in [
            (search_path, safe),
            (c"default_transaction_isolation", "read committed"),
            (c"default_transaction_read_only", "off"),
        ] {
            let value = std::ffi::CString::new(value).unwrap();
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }
    {
        let mut shared = SHARED.exclusive();
        let procno = unsafe { (*pg_sys::MyProc).pgprocno };
        match shared
            .slots
            .iter_mut()
            .find(|s| s.state != State::Free && s.database == database)
        {
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
    let mut last_sweep = std::time::Instant::now();
    let mut idle_as_replica = false;
    loop {
        check_signals();
        if !extension_exists() {
            mark_no_extension(database);
            return;
        }
        // A logical replication subscriber gets the publisher's purge as replicated changes
        // (the softfk tables are published with FOR ALL TABLES); it purges nothing itself.
        let replica = ENABLED.get() && in_worker_transaction(purge::replica_of_a_publisher);
        if replica != idle_as_replica {
            idle_as_replica = replica;
            if replica {
                log!("pg_softfk: the purge worker of this database stays idle: softfk.deletion is replicated from a publisher, whose purge arrives here");
            }
        }
        if ENABLED.get() && !replica {
            activity(c"purging");
            // (A queue row that keeps failing waits on its own backoff, src/purge.rs: it
            // neither fills the run log at every naptime nor slows the rest of the queue.)
            if purge::run(purge::Mode::Worker).is_some() {
                purge::end_worker_run();
            }
            let interval = SWEEP_INTERVAL.get();
            if interval > 0 && last_sweep.elapsed() >= Duration::from_secs(interval as u64) {
                last_sweep = std::time::Instant::now();
                queue_sweep();
            }
            activity(c"");
        }
        sleep(naptime());
    }
}

/// How the worker shows in pg_stat_activity: `purging`, or idle.
fn activity(what: &std::ffi::CStr) {
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

/// A sweep queues, for every parent column with soft references, a row meaning "every key".
fn queue_sweep() {
    in_worker_transaction(|| {
        // (Not for a parent column whose previous sweep or TRUNCATE is still queued.)
        Spi::run(
            "INSERT INTO softfk.deletion (parent_table, parent_column, keys, cause)
             SELECT DISTINCT r.parent_table, r.parent_column, NULL::text[], 'sweep'
               FROM softfk.reference r
              WHERE NOT EXISTS (SELECT FROM softfk.deletion d
                                 WHERE d.keys IS NULL AND d.parent_table = r.parent_table
                                   AND d.parent_column = r.parent_column
                                   AND d.reference_id IS NULL)",
        )
        .expect("queueing a sweep")
    });
    unsafe { pg_sys::SetLatch(pg_sys::MyLatch) };
}

/// A transaction of the worker's own, outside a purge run; an error ends the worker (the
/// launcher starts a new one).
fn in_worker_transaction<R>(f: impl FnOnce() -> R) -> R {
    purge::in_transaction(purge::Mode::Worker, f).unwrap_or_else(|e| e.rethrow())
}

fn mark_no_extension(database: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared
        .slots
        .iter_mut()
        .find(|s| s.state != State::Free && s.database == database)
    {
        *slot = Slot {
            database,
            state: State::NoExtension,
            procno: -1,
        };
    }
}

/// On exit (normal or FATAL, also before it ever connected), a worker gives its slot back so
/// that the launcher starts a new one; a database marked as having no extension stays marked.
#[pg_guard]
unsafe extern "C-unwind" fn leave_slot(_code: i32, arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    let mut shared = SHARED.exclusive();
    let me = unsafe { (*pg_sys::MyProc).pgprocno };
    if let Some(slot) = shared.slots.iter_mut().find(|s| {
        s.database == database
            && (s.state == State::Starting || s.state == State::Running && s.procno == me)
    }) {
        *slot = Slot::default();
    }
    let launcher = shared.launcher_procno;
    drop(shared);
    set_latch(launcher);
}
