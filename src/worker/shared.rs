//! The workers' shared memory: one slot per database, saying who serves it (to wake it) or
//! that it has no extension; and the launcher's PGPROC number.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::postgres::process;

/// Databases the launcher keeps track of: those served (each needs a background worker slot:
/// max_worker_processes) and those found without the extension.
pub const MAX_DATABASES: usize = 1024;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
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
pub struct Slot {
    pub database: u32,
    pub state: State,
    pub procno: i32,
}

#[derive(Clone, Copy)]
pub struct Shared {
    pub launcher_procno: i32,
    pub slots: [Slot; MAX_DATABASES],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_procno: -1,
            slots: [Slot::default(); MAX_DATABASES],
        }
    }
}

impl Shared {
    /// The slot of `database`, if it has one.
    pub fn slot_of(&mut self, database: u32) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.state != State::Free && s.database == database)
    }
}

// SAFETY: plain data (integers and a fieldless enum), no pointers: valid in any process
// that maps the segment.
unsafe impl PGRXSharedMemory for Shared {}

// SAFETY: initialized once by pg_shmem_init! in init(), in the postmaster, before any
// process uses it.
pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_softfk workers") };

/// Whether the library was loaded by shared_preload_libraries (set in the postmaster,
/// inherited by every process it forks): only then do the workers and their shared memory
/// exist.
static LOADED_AT_STARTUP: AtomicBool = AtomicBool::new(false);

/// Called by the postmaster while it loads shared_preload_libraries.
pub fn init() {
    LOADED_AT_STARTUP.store(true, Ordering::Relaxed);
    pg_shmem_init!(SHARED);
}

/// Whether this process can wake workers (the library was preloaded).
pub fn is_loaded() -> bool {
    LOADED_AT_STARTUP.load(Ordering::Relaxed)
}

/// Wake whoever serves this database: its worker, or the launcher to start one (after CREATE
/// EXTENSION, the database is no longer marked as having none).
pub fn wake_database() {
    if !is_loaded() {
        return;
    }
    let database = process::database_id().to_u32();
    let procno = {
        let mut shared = SHARED.exclusive();
        let launcher = shared.launcher_procno;
        match shared.slot_of(database) {
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

pub fn set_latch(procno: i32) {
    if procno >= 0 {
        // SAFETY: procno is a PGPROC number a process wrote into shared memory for itself;
        // allProcs has an entry for every number, and setting a latch is always allowed.
        unsafe {
            let proc = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
            pg_sys::SetLatch(&mut (*proc).procLatch);
        }
    }
}

pub fn release_slot(database: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_of(database) {
        *slot = Slot::default();
    }
}

pub fn mark_no_extension(database: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_of(database) {
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
pub unsafe extern "C-unwind" fn leave_slot(_code: i32, arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    let mut shared = SHARED.exclusive();
    let me = process::procno();
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
