//! The workers' shared memory: one slot per database the launcher knows, saying whether a
//! purge worker serves it, one is wanted, or none is needed; and the launcher's PGPROC number.
//!
//! A database moves through the states like this:
//!
//! ```text
//!   (new database, or Idle for a minute) --> Waiting (a first look)
//!   Waiting --launcher, room in the pool--> Starting --worker connects--> Connected
//!   Starting --no background worker slot, or no news for 10 s--> Waiting
//!   Connected --nothing to do for pg_softfk.worker_idle_timeout--> Idle
//!   Connected --asked to make room, or turned off, with work left--> Waiting
//!   Connected --no extension there--> NoExtension
//!   Connected or Starting --worker exits otherwise (SIGTERM, FATAL)--> Waiting, retried
//!                                                                    after a growing delay
//!   Idle, NoExtension --deleting commit, CREATE EXTENSION, sweep due--> Waiting
//!   Idle, Waiting, NoExtension --database dropped or no longer joinable--> Free
//! ```
//!
//! A worker that leaves in order after a wake-up it has not acted on leaves Waiting, whatever
//! it meant to leave as. Each start has a generation number (passed to the worker with the
//! database): a worker whose start was given up on, or that exits after another was started,
//! touches nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::postgres::process;
use crate::settings::MAX_PURGE_WORKERS;

/// Databases the launcher keeps track of.
pub const MAX_DATABASES: usize = 1024;

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum State {
    #[default]
    Free,
    /// Known to have the extension; no worker is connected, none is needed until a deleting
    /// commit, or until `next_sweep_at`.
    Idle,
    /// A worker is wanted (work is due, or the database has not been looked at yet); the
    /// launcher starts one as soon as the pool has room, the longest-waiting first.
    Waiting,
    /// A worker was started for the database and has not connected yet.
    Starting,
    /// A worker is connected; `procno` and `pid` are its.
    Connected,
    /// The database has no pg_softfk; nobody serves it until CREATE EXTENSION.
    NoExtension,
}

#[derive(Clone, Copy, Default)]
pub struct Slot {
    pub database: u32,
    pub state: State,
    pub procno: i32,
    pub pid: i32,
    /// When the slot entered its state (timestamptz microseconds).
    pub since: i64,
    /// Started only to see whether the database has the extension and work: its worker
    /// leaves at once when there is nothing to do.
    pub first_look: bool,
    /// The launcher asks the worker to make room for a database that waits.
    pub make_room: bool,
    /// A deleting commit woke the connected worker since it last looked at the queue.
    pub woken: bool,
    /// The last start failed: no free background worker slot (max_worker_processes).
    pub no_background_worker_slot: bool,
    /// When the next sweep is due (0: none).
    pub next_sweep_at: i64,
    /// The number of the latest start.
    pub generation: u32,
    /// Exits out of order in a row (for the delay before the next start).
    pub failures: u32,
    /// Not to be joined before then: a DROP DATABASE, CREATE DATABASE ... TEMPLATE or
    /// ALTER DATABASE needs it without connections (src/worker/give_way.rs).
    pub held_off_until: i64,
}

#[derive(Clone, Copy)]
pub struct Shared {
    pub launcher_procno: i32,
    /// Workers that left their slot in order and whose process has not exited yet: they
    /// still count against the pool, so a new start never makes one worker too many.
    pub leaving: u32,
    pub slots: [Slot; MAX_DATABASES],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_procno: -1,
            leaving: 0,
            slots: [Slot::default(); MAX_DATABASES],
        }
    }
}

impl Shared {
    /// The slot of `database`, if it has one (to read).
    pub fn find(&self, database: u32) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.state != State::Free && s.database == database)
    }

    /// Purge worker processes: starting, connected, or leaving.
    pub fn busy(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Starting | State::Connected))
            .count()
            + self.leaving as usize
    }

    /// The slot of `database`, if it has one.
    pub fn slot_of(&mut self, database: u32) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.state != State::Free && s.database == database)
    }

    /// The slot of `database`, taking a free one if it has none (None: every slot is taken).
    pub fn slot_for(&mut self, database: u32) -> Option<&mut Slot> {
        let index = self
            .slots
            .iter()
            .position(|s| s.state != State::Free && s.database == database)
            .or_else(|| self.slots.iter().position(|s| s.state == State::Free))?;
        let slot = &mut self.slots[index];
        if slot.state == State::Free {
            *slot = Slot {
                database,
                state: State::Idle,
                ..Slot::default()
            };
        }
        Some(slot)
    }
}

impl Slot {
    /// Enter `state` now.
    pub fn enter(&mut self, state: State, now: i64) {
        self.state = state;
        self.since = now;
        if state != State::Connected {
            self.procno = -1;
            self.pid = 0;
            self.make_room = false;
        }
    }

    /// A worker is wanted: Idle or NoExtension become Waiting (the others already have or
    /// want one).
    pub fn want_worker(&mut self, now: i64) {
        if matches!(self.state, State::Idle | State::NoExtension) {
            self.enter(State::Waiting, now);
            self.first_look = false;
        }
    }
}

// SAFETY: plain data (integers, booleans and a fieldless enum), no pointers: valid in any
// process that maps the segment.
unsafe impl PGRXSharedMemory for Shared {}

// SAFETY: initialized once by pg_shmem_init! in init(), in the postmaster, before any
// process uses it.
pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_softfk workers") };

/// Whether the library was loaded by shared_preload_libraries (set in the postmaster,
/// inherited by every process it forks): only then do the workers and their shared memory
/// exist.
static LOADED_AT_STARTUP: AtomicBool = AtomicBool::new(false);

/// This worker process left its slot in order ([`leave`]) and is counted in
/// `Shared::leaving` until it exits.
static LEFT_IN_ORDER: AtomicBool = AtomicBool::new(false);

/// Called by the postmaster while it loads shared_preload_libraries.
pub fn init() {
    LOADED_AT_STARTUP.store(true, Ordering::Relaxed);
    pg_shmem_init!(SHARED);
}

/// Whether this process can wake workers (the library was preloaded).
pub fn is_loaded() -> bool {
    LOADED_AT_STARTUP.load(Ordering::Relaxed)
}

pub fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Wake whoever serves this database: its worker, or the launcher to start one.
pub fn wake_database() {
    if !is_loaded() {
        return;
    }
    let database = process::database_id().to_u32();
    let procno = {
        let mut shared = SHARED.exclusive();
        let launcher = shared.launcher_procno;
        match shared.slot_for(database) {
            Some(slot) if slot.state == State::Connected => {
                slot.woken = true;
                slot.procno
            }
            Some(slot) => {
                slot.want_worker(now());
                launcher
            }
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

/// The worker of start `generation` for `database` has connected: whether it came for a first
/// look. None when the database no longer waits for it (given up on, or held off meanwhile).
pub fn connected(database: u32, generation: u32) -> Option<bool> {
    let mut shared = SHARED.exclusive();
    let slot = shared.slot_of(database)?;
    if slot.state != State::Starting || slot.generation != generation || slot.held_off_until > now()
    {
        return None;
    }
    slot.enter(State::Connected, now());
    slot.procno = process::procno();
    slot.pid = process::pid();
    Some(slot.first_look)
}

/// The worker is about to look at the queue: wake-ups until now are taken care of.
pub fn forget_wakeup(database: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_of(database) {
        slot.woken = false;
    }
}

/// The worker leaves `database`: Waiting when work is left (it made room for another),
/// Idle otherwise; NoExtension when the extension is not there. A wake-up it has not acted on
/// (a deleting commit, CREATE EXTENSION) makes it Waiting: its keys are not left behind.
pub fn leave(database: u32, next: State) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_of(database) {
        if slot.state == State::Connected && slot.procno == process::procno() {
            let next = if slot.woken { State::Waiting } else { next };
            slot.enter(next, now());
            slot.first_look = false;
            slot.woken = false;
            slot.failures = 0;
            shared.leaving += 1;
            LEFT_IN_ORDER.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether a database waits for a worker that the pool has no room for.
pub fn others_wait() -> bool {
    let now = now();
    let shared = SHARED.share();
    shared.busy() >= MAX_PURGE_WORKERS.get().max(1) as usize
        && shared
            .slots
            .iter()
            .any(|s| s.state == State::Waiting && s.held_off_until <= now)
}

/// Whether the launcher asked this worker to make room for a database that waits.
pub fn asked_to_make_room(database: u32) -> bool {
    SHARED.share().find(database).is_some_and(|s| s.make_room)
}

/// The sweep of `database`, if one is due now (`interval` seconds, 0: none). The first
/// falls one interval after the database was first served.
pub fn sweep_due(database: u32, interval: i64) -> bool {
    let mut shared = SHARED.exclusive();
    let Some(slot) = shared.slot_of(database) else {
        return false;
    };
    let now = now();
    if interval <= 0 {
        slot.next_sweep_at = 0;
        return false;
    }
    if slot.next_sweep_at == 0 {
        slot.next_sweep_at = now + interval * 1_000_000;
    }
    if slot.next_sweep_at > now {
        return false;
    }
    slot.next_sweep_at = now + interval * 1_000_000;
    true
}

/// A start succeeded (the postmaster has a background worker slot for it).
pub fn started(database: u32) {
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_of(database) {
        slot.no_background_worker_slot = false;
    }
}

/// A start failed for lack of a background worker slot: the database waits again, and says
/// why. Whether this is the first such failure in a row (to warn once).
pub fn start_failed(database: u32) -> bool {
    let mut shared = SHARED.exclusive();
    match shared.slot_of(database) {
        Some(slot) if slot.state == State::Starting => {
            slot.state = State::Waiting;
            !std::mem::replace(&mut slot.no_background_worker_slot, true)
        }
        _ => false,
    }
}

/// What the slot of this database says, for softfk_status.
pub fn slot_of_this_database() -> Option<Slot> {
    SHARED
        .share()
        .find(process::database_id().to_u32())
        .copied()
}

/// The argument a worker is started with: the database, and the start's generation.
pub fn worker_argument(database: u32, generation: u32) -> pg_sys::Datum {
    pg_sys::Datum::from((u64::from(generation) << 32) | u64::from(database))
}

/// The database and generation of a worker's argument.
pub fn from_worker_argument(arg: pg_sys::Datum) -> (u32, u32) {
    let value = arg.value() as u64;
    (value as u32, (value >> 32) as u32)
}

/// The delay before a database whose worker exited out of order `failures` times in a row
/// gets another: 1 s, doubling up to a minute.
fn retry_delay(failures: u32) -> i64 {
    (1_000_000_i64 << failures.saturating_sub(1).min(6)).min(60_000_000)
}

/// On exit (normal or FATAL, also before it ever connected), a worker that did not leave
/// its slot in order (SIGTERM, FATAL, an error) leaves it Waiting, to be started again after
/// a delay that grows with each such exit in a row; one that did stops counting against the
/// pool. A worker of an earlier start touches nothing else.
///
/// Registered with `on_shmem_exit` before the worker connects, so it runs after the
/// process's `pg_stat_activity` entry is gone (that callback is registered later, when the
/// worker connects, and exit callbacks run newest first): pg_stat_activity never shows
/// more purge workers than the pool allows.
#[pg_guard]
pub unsafe extern "C-unwind" fn leave_slot(_code: i32, arg: pg_sys::Datum) {
    let (database, generation) = from_worker_argument(arg);
    let mut shared = SHARED.exclusive();
    if LEFT_IN_ORDER.swap(false, Ordering::Relaxed) {
        shared.leaving = shared.leaving.saturating_sub(1);
    }
    let me = process::procno();
    if let Some(slot) = shared.slot_of(database) {
        let mine = match slot.state {
            State::Connected => slot.procno == me,
            State::Starting => slot.generation == generation,
            _ => false,
        };
        if mine {
            let now = now();
            slot.enter(State::Waiting, now);
            slot.failures += 1;
            slot.held_off_until = slot.held_off_until.max(now + retry_delay(slot.failures));
        }
    }
    let launcher = shared.launcher_procno;
    drop(shared);
    set_latch(launcher);
}
