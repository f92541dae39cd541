//! The purge engine: applies each reference's on_delete action to the child rows of deleted
//! parent keys. The background worker (src/worker.rs) and `softfk_purge()` both run it.
//!
//! Work comes from the queue `softfk.deletion` (filled by src/capture.rs) in *batches*: a
//! batch takes the oldest ready queue row, purges up to `pg_softfk.keys_per_batch` of its keys
//! in every child that references the parent (each statement touching about
//! `pg_softfk.rows_per_statement` rows), records the keys as done, and updates the totals, all
//! in one transaction. A crash before the commit loses the whole batch and the queue still
//! holds its keys: work is redone, never lost and never applied twice. No child-row lock is
//! held longer than one batch.
//!
//! Every purge statement re-checks, under its own snapshot, that the parent key is still
//! absent (src/report.rs builds the statements): a user re-created with the same key keeps its
//! rows.
//!
//! **The race window.** A child row can pass its check just before the parent's DELETE
//! commits and then commit as an orphan, but only in a transaction that already had its
//! transaction id when the delete committed. So a key gets a *first pass* as soon as the
//! delete commits, which skips rows other transactions have locked (`SKIP LOCKED`), and
//! records `final_after`: the next transaction id at that moment. Once every transaction
//! below it has ended ([`horizon`]), the *final pass* purges again, this time waiting for row
//! locks (up to `pg_softfk.lock_timeout`). After it, a key checked by validation can gain no
//! new child row. If nothing else was running when the first pass began, that pass is final.
//!
//! A batch that fails on a lock or statement timeout is rolled back and retried with half the
//! keys; one that still fails with a single key is left for the next run and logged.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode, PgTryBuilder};

use crate::registry::{self, as_extension_owner, as_table_owner, read_one, OnDelete, Reference};
use crate::report::{Pass, PurgeSql};
use crate::settings::{with_settings, SAFE_SEARCH_PATH};

pub static KEYS_PER_BATCH: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static ROWS_PER_STATEMENT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Milliseconds.
pub static LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Milliseconds.
pub static STATEMENT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);
/// Whether the purge runs in a database that subscribes to logical replication.
pub static ON_SUBSCRIBER: GucSetting<bool> = GucSetting::<bool>::new(false);
/// The search_path child triggers see during a purge statement; empty: the pinned one.
pub static CHILD_SEARCH_PATH: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c""));

pub fn define_settings() {
    GucRegistry::define_int_guc(
        c"pg_softfk.keys_per_batch",
        c"Deleted parent keys the purge handles per transaction.",
        c"Each batch purges the child rows of at most this many keys (one queue row holds at \
          most 1000), then commits.",
        &KEYS_PER_BATCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.rows_per_statement",
        c"About how many child rows one purge statement deletes, nulls or archives.",
        c"A batch's keys are split into statements by the child column's statistics (the rows of \
          one key are never split). A TRUNCATE or sweep takes at most this many per statement.",
        &ROWS_PER_STATEMENT,
        1,
        100_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.lock_timeout",
        c"How long a purge statement waits for a child row locked by another transaction.",
        c"On timeout the batch is rolled back and retried with fewer keys. 0 waits forever.",
        &LOCK_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.statement_timeout",
        c"How long one purge statement of the worker may run.",
        c"On timeout the batch is rolled back and retried with fewer keys. 0 means no limit. \
          softfk_purge() is bounded by the session's statement_timeout instead.",
        &STATEMENT_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"pg_softfk.purge_on_subscriber",
        c"Whether the purge runs in a database that subscribes to logical replication.",
        c"Off (the default): a subscriber receives the publisher's purge as replicated changes, \
          and its own would write queue, run-log and archive rows whose ids collide with \
          replicated ones, stopping the subscription. Turn it on only where the softfk tables \
          are not replicated.",
        &ON_SUBSCRIBER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_softfk.child_search_path",
        c"The search_path a purge statement runs with, for the child's triggers.",
        c"Empty (the default): pg_catalog, pg_temp, as all of pg_softfk's queries. Set it (for \
          example to '\"$user\", public') when triggers on child tables name tables or functions \
          without a schema and have no SET search_path of their own. pg_softfk's statements \
          name everything with its schema, so only those triggers see the difference.",
        &CHILD_SEARCH_PATH,
        // Superusers only: it decides what the child owner's triggers resolve.
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// How a run isolates its batches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The background worker: each batch is a transaction of its own.
    Worker,
    /// softfk_purge(): each batch is a subtransaction of the caller's transaction.
    Function,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Worker => "worker",
            Mode::Function => "softfk_purge()",
        }
    }
}

/// Rows changed for one reference.
#[derive(Default, Clone, Copy)]
pub struct Rows {
    pub deleted: i64,
    pub nulled: i64,
    pub archived: i64,
}

impl Rows {
    fn add(&mut self, other: Rows) {
        self.deleted += other.deleted;
        self.nulled += other.nulled;
        self.archived += other.archived;
    }

    pub fn total(&self) -> i64 {
        self.deleted + self.nulled + self.archived
    }
}

/// A reference the purge changed rows of, as it was when it did.
#[derive(Clone)]
pub struct Touched {
    pub child: pg_sys::Oid,
    pub child_column: String,
    pub parent: pg_sys::Oid,
    pub on_delete: String,
    pub rows: Rows,
}

/// What a run did.
#[derive(Default)]
pub struct RunReport {
    pub batches: i64,
    pub keys: i64,
    /// Per reference id.
    pub rows: BTreeMap<i64, Touched>,
    pub errors: Vec<serde_json::Value>,
}

impl RunReport {
    fn total(&self) -> Rows {
        let mut total = Rows::default();
        for touched in self.rows.values() {
            total.add(touched.rows);
        }
        total
    }
}

/// Run the purge until no queue row is ready. `None` when another run holds the database
/// (only the worker gives way; softfk_purge() waits for it).
pub fn run(mode: Mode) -> Option<RunReport> {
    if !in_transaction(mode, begin_run(mode)).unwrap_or_else(|e| e.rethrow()) {
        return None;
    }
    // Entries that failed even with one key wait for the next run (the worker's: until their
    // backoff has passed); entries that timed out are retried with fewer keys.
    let mut failed_entries: Vec<i64> = match mode {
        Mode::Worker => Backoff::waiting(),
        Mode::Function => Vec::new(),
    };
    // The worker logs a run only when there is work; an explicit softfk_purge() always.
    if mode == Mode::Worker
        && !in_transaction(mode, || work_is_ready(&failed_entries)).unwrap_or_else(|e| e.rethrow())
    {
        return Some(RunReport::default());
    }
    let run_id = in_transaction(mode, start_run_log(mode)).unwrap_or_else(|e| e.rethrow());
    let mut report = RunReport::default();
    LAST_ROUND.with_borrow_mut(|last| last.clear());
    let mut keys_for_entry: BTreeMap<i64, i32> = BTreeMap::new();
    // Entries whose batch failed with several references: retried one reference at a time.
    let mut isolated = std::collections::BTreeSet::new();
    // Entries whose final pass saw a parent key come back: retried locking every row first.
    let mut locking_first = std::collections::BTreeSet::new();
    loop {
        if mode == Mode::Worker {
            pg_sys::check_for_interrupts!();
        }
        let outcome = in_transaction(mode, || {
            batch(
                mode,
                &failed_entries,
                &keys_for_entry,
                &isolated,
                &locking_first,
            )
        });
        match outcome {
            Ok(None) => break,
            Ok(Some(done)) => {
                Backoff::succeeded(done.entry);
                for failure in done.failures {
                    if let (Some(reference), Some(message)) =
                        (failure["reference"].as_i64(), failure["message"].as_str())
                    {
                        let message = message.to_string();
                        let _ = in_transaction(mode, || record_error(reference, &message));
                    }
                    // The row the keys went to has just failed: it waits for the next run
                    // (the worker's: for its backoff), as a row that failed on its own does.
                    if failure["retry_now"] == false {
                        for handed_to in failure["handed_over_to"].as_array().into_iter().flatten()
                        {
                            let handed_to = handed_to.as_i64().expect("a queue row id");
                            failed_entries.push(handed_to);
                            if mode == Mode::Worker {
                                Backoff::failed(handed_to);
                            }
                        }
                    }
                    report.errors.push(failure);
                }
                report.batches += 1;
                report.keys += done.keys;
                for (reference, touched) in done.rows {
                    match report.rows.get_mut(&reference) {
                        Some(known) => known.rows.add(touched.rows),
                        None => {
                            report.rows.insert(reference, touched);
                        }
                    }
                }
            }
            Err(error) => {
                let (entry, keys, reference) = CURRENT.get();
                // A lock timeout, or the worker's own statement timeout. Under softfk_purge() a
                // cancel is the caller's (statement_timeout, Ctrl-C): it ends the call.
                let timed_out = match error.sql_error_code() {
                    PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE => true,
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED if mode == Mode::Worker => true,
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED => error.rethrow(),
                    _ => false,
                };
                if entry == 0 || mode == Mode::Worker && unsafe { pg_sys::ProcDiePending != 0 } {
                    error.rethrow();
                }
                // A parent key came back while the final pass ran: retried locking first.
                if error.sql_error_code() == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
                    && locking_first.insert(entry)
                {
                    continue;
                }
                // A batch of several references is retried with each in a subtransaction of its
                // own: the failing one hands its keys over, the others are purged.
                if MANY_REFERENCES.get() && isolated.insert(entry) {
                    continue;
                }
                // A batch that merged later rows is retried with its own row alone first, so
                // that one bad key in a merged row never holds back the keys before it.
                if let Some(own_keys) = OWN_KEYS.get() {
                    keys_for_entry.insert(entry, own_keys);
                    continue;
                }
                if timed_out && keys > 1 {
                    keys_for_entry.insert(entry, keys / 2);
                    continue;
                }
                failed_entries.push(entry);
                if mode == Mode::Worker {
                    Backoff::failed(entry);
                }
                let detail = serde_json::json!({
                    "queue_entry": entry,
                    "reference": reference,
                    "keys": keys,
                    "sqlstate": sqlstate(error.sql_error_code()),
                    "message": error.message(),
                });
                report.errors.push(detail);
                if reference != 0 {
                    let message = error.message().to_string();
                    let _ = in_transaction(mode, || record_error(reference, &message));
                }
            }
        }
    }
    in_transaction(mode, || finish_run_log(run_id, &report)).unwrap_or_else(|e| e.rethrow());
    Some(report)
}

/// The five-character SQLSTATE of an error code (PostgreSQL packs it six bits a character).
fn sqlstate(code: PgSqlErrorCode) -> String {
    let packed = code as i32;
    (0..5)
        .map(|i| (((packed >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// A caught error, or what a catch handler returns.
pub struct Failure(Box<pg_sys::panic::CaughtError>);

impl Failure {
    fn sql_error_code(&self) -> PgSqlErrorCode {
        match &*self.0 {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report) => report.sql_error_code(),
            _ => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn message(&self) -> String {
        match &*self.0 {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report) => report.message().to_string(),
            pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
        }
    }

    pub fn rethrow(self) -> ! {
        (*self.0).rethrow()
    }
}

/// Run `f` in a transaction of its own (worker) or a subtransaction (softfk_purge()),
/// committing it when `f` returns and rolling it back when `f` raises an error.
pub fn in_transaction<R>(mode: Mode, f: impl FnOnce() -> R) -> Result<R, Failure> {
    let f = AssertUnwindSafe(f);
    unsafe {
        let memory_context = pg_sys::CurrentMemoryContext;
        let resource_owner = pg_sys::CurrentResourceOwner;
        match mode {
            Mode::Worker => {
                pg_sys::SetCurrentStatementStartTimestamp();
                pg_sys::StartTransactionCommand();
                // As SET TRANSACTION would, before the first snapshot: whatever a trigger did
                // to the session's defaults, a batch's final pass must see what committed
                // after the batch began (READ COMMITTED), and write.
                pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
                pg_sys::XactReadOnly = false;
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            Mode::Function => {
                pg_sys::BeginInternalSubTransaction(std::ptr::null());
                pg_sys::MemoryContextSwitchTo(memory_context);
            }
        }
        let result = PgTryBuilder::new(AssertUnwindSafe(move || {
            let value = (f.0)();
            match mode {
                Mode::Worker => {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommitTransactionCommand();
                }
                Mode::Function => pg_sys::ReleaseCurrentSubTransaction(),
            }
            Ok(value)
        }))
        .catch_others(|error| Err(Failure(Box::new(error))))
        .catch_rust_panic(|error| Err(Failure(Box::new(error))))
        .execute();
        if result.is_err() {
            match mode {
                Mode::Worker => pg_sys::AbortCurrentTransaction(),
                Mode::Function => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
            }
        }
        pg_sys::MemoryContextSwitchTo(memory_context);
        pg_sys::CurrentResourceOwner = resource_owner;
        result
    }
}

thread_local! {
    /// (queue entry, keys, reference) of the batch in progress, for the error report of a
    /// batch that was rolled back.
    static CURRENT: Cell<(i64, i32, i64)> = const { Cell::new((0, 0, 0)) };
    /// When the batch in progress merged later queue rows: the keys of its own entry.
    static OWN_KEYS: Cell<Option<i32>> = const { Cell::new(None) };
    /// Whether the batch in progress purges several references.
    static MANY_REFERENCES: Cell<bool> = const { Cell::new(false) };
    /// Per (queue row, reference, leaf) of a whole-table purge: the orphan keys its last
    /// round purged, in this run.
    static LAST_ROUND: std::cell::RefCell<std::collections::HashMap<(i64, i64, String), Vec<String>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

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
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
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
fn worker_still_holds_run_lock() -> bool {
    let Some(tag) = WORKER_RUN_LOCK.get() else {
        return true;
    };
    let exclusive = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: `tag` is the complete tag begin_run() took the session lock with.
    unsafe {
        pg_sys::LockHeldByMe(&tag, exclusive)
            || pg_sys::LockAcquire(&tag, exclusive, true, true)
                != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    }
}

/// Take the run lock: the worker holds it for the session and gives way when it is taken;
/// softfk_purge() holds it for its transaction and waits.
fn begin_run(mode: Mode) -> impl FnOnce() -> bool {
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
            crate::error::error(
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

/// A run's first row in the run log. Whoever holds the run lock knows that a 'running' row
/// left behind is a run whose process ended (crash, kill, shutdown) before it finished.
fn start_run_log(mode: Mode) -> impl FnOnce() -> i64 {
    move || {
        as_extension_owner(|| {
            // The log keeps a week.
            Spi::run("DELETE FROM softfk.purge_run WHERE finished_at < now() - interval '7 days'")
                .expect("trimming softfk.purge_run");
            Spi::run(
                "UPDATE softfk.purge_run
                    SET status = 'failed', finished_at = clock_timestamp(),
                        errors = errors || jsonb_build_array(jsonb_build_object(
                            'message', 'interrupted: the process running it ended before it finished'))
                  WHERE status = 'running'",
            )
            .expect("closing interrupted runs");
            Spi::get_one_with_args::<i64>(
                "INSERT INTO softfk.purge_run (started_by) VALUES ($1) RETURNING id",
                &[mode.name().into()],
            )
            .expect("writing softfk.purge_run")
            .expect("INSERT RETURNING returns the id")
        })
    }
}

fn finish_run_log(run_id: i64, report: &RunReport) {
    let status = match (report.errors.is_empty(), report.batches) {
        (true, _) => "completed",
        (false, 0) => "failed",
        (false, _) => "partial",
    };
    let total = report.total();
    as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE softfk.purge_run
                SET status = $2, finished_at = clock_timestamp(), batches = $3, keys_purged = $4,
                    rows_deleted = $5, rows_nulled = $6, rows_archived = $7, errors = $8
              WHERE id = $1",
            &[
                run_id.into(),
                status.into(),
                (report.batches as i32).into(),
                report.keys.into(),
                total.deleted.into(),
                total.nulled.into(),
                total.archived.into(),
                JsonB(serde_json::Value::Array(report.errors.clone())).into(),
            ],
        )
        .expect("writing softfk.purge_run")
    });
}

fn record_error(reference: i64, message: &str) {
    as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO softfk.purge_total AS t (reference_id, last_error, last_error_at)
             SELECT $1, $2, clock_timestamp() WHERE EXISTS (SELECT FROM softfk.reference WHERE id = $1)
             ON CONFLICT (reference_id) DO UPDATE
                SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
            &[reference.into(), message.into()],
        )
        .expect("writing softfk.purge_total")
    });
}

/// A queue row that fails even with one key is retried by the worker after a delay that
/// doubles with each failure (1 s, 2 s, ... up to [`Backoff::LONGEST`]), while the rest of the
/// queue is purged as usual: one bad row does not slow the worker down. softfk_purge()
/// retries every row at once.
struct Backoff;

thread_local! {
    /// Queue row id -> (failures in a row, not before).
    static BACKOFF: std::cell::RefCell<BTreeMap<i64, (u32, std::time::Instant)>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

impl Backoff {
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(300);

    /// The rows whose delay has not passed yet.
    fn waiting() -> Vec<i64> {
        let now = std::time::Instant::now();
        BACKOFF.with_borrow(|rows| {
            rows.iter()
                .filter(|(_, (_, at))| *at > now)
                .map(|(id, _)| *id)
                .collect()
        })
    }

    fn failed(entry: i64) {
        let now = std::time::Instant::now();
        BACKOFF.with_borrow_mut(|rows| {
            // Rows that left the queue some other way (a dropped registration) are not
            // remembered for ever.
            if rows.len() >= 10_000 {
                rows.retain(|_, (_, at)| *at > now);
            }
            let failures = rows.get(&entry).map_or(0, |(n, _)| *n) + 1;
            let delay =
                std::time::Duration::from_secs(1 << (failures - 1).min(9)).min(Backoff::LONGEST);
            rows.insert(entry, (failures, now + delay));
        });
    }

    fn succeeded(entry: i64) {
        BACKOFF.with_borrow_mut(|rows| rows.remove(&entry));
    }
}

/// What one batch did.
struct Batch {
    /// The queue row it took.
    entry: i64,
    keys: i64,
    /// References that failed and were handed over to queue rows of their own.
    failures: Vec<serde_json::Value>,
    rows: BTreeMap<i64, Touched>,
}

/// One queue row as a batch takes it, with the small rows merged into its batch.
struct Entry {
    id: i64,
    /// Other queue rows of the same parent column in the same pass, whose keys this batch
    /// also purges, all of them: one user deleted per statement makes one-key rows, and a
    /// transaction per key would cap the purge at a few hundred keys a second.
    /// (row id, how many keys it brought), in the order its keys follow the entry's own.
    merged: Vec<(i64, usize)>,
    parent: pg_sys::Oid,
    parent_column: String,
    /// This batch's keys; None means every key.
    keys: Option<Vec<String>>,
    /// The one reference this row is for (a reference's keys handed over after it failed in
    /// a batch with others); None: every reference of the parent column.
    reference: Option<i64>,
    /// Whether this batch's final pass locks every row before judging it (run()).
    locking_first: bool,
    /// Whether this batch starts the current pass (no key of it done yet).
    starts_pass: bool,
    /// Keys of `id` done in the current pass after this batch.
    done_after: i32,
    total_keys: i32,
    final_pass: bool,
}

/// Purge one batch in the current transaction. `None` when no queue row is ready.
fn batch(
    mode: Mode,
    failed_entries: &[i64],
    keys_for_entry: &BTreeMap<i64, i32>,
    isolated: &std::collections::BTreeSet<i64>,
    locking_first: &std::collections::BTreeSet<i64>,
) -> Option<Batch> {
    CURRENT.set((0, 0, 0));
    OWN_KEYS.set(None);
    MANY_REFERENCES.set(false);
    if !worker_still_holds_run_lock() {
        return None; // another run took over: this one ends
    }
    // Deferred triggers fire at the end of each purge statement, not at COMMIT: only there
    // do they run as the child's owner, with their settings thrown away (purge_reference).
    // (In softfk_purge(), the rest of the caller's transaction checks immediately too, as
    // after SET CONSTRAINTS ALL IMMEDIATE.)
    Spi::run("SET CONSTRAINTS ALL IMMEDIATE").expect("SET CONSTRAINTS ALL IMMEDIATE");
    let (_, horizon_before) = horizon();
    let mut entry =
        as_extension_owner(|| take_entry(horizon_before, failed_entries, keys_for_entry))?;
    entry.locking_first = locking_first.contains(&entry.id);
    // Read after the entry was seen: the deletion has committed, so every transaction that
    // could still commit an orphan of it has an id below `next`.
    let (next, horizon_now) = horizon();
    if !entry.final_pass && entry.starts_pass && horizon_now >= next {
        entry.final_pass = true; // nothing else is running: this pass is the final one
    }
    let key_count = entry.keys.as_ref().map_or(0, |k| k.len() as i32);
    CURRENT.set((entry.id, key_count, 0));
    if !entry.merged.is_empty() {
        OWN_KEYS.set(Some(entry.done_after));
    }

    let mut rows = BTreeMap::new();
    let mut failures = Vec::new();
    let mut hit_limit = false;
    let references: Vec<_> = as_extension_owner(|| {
        registry::load_each(registry::Which::Parent(entry.parent, &entry.parent_column))
    })
    .into_iter()
    .filter(|loaded| match loaded {
        Ok(reference) => reference.on_delete != OnDelete::NoAction,
        Err(unusable) => unusable.on_delete != OnDelete::NoAction,
    })
    .filter(|loaded| {
        entry
            .reference
            .is_none_or(|only| only == reference_id(loaded))
    })
    .collect();
    // A batch whose references failed together before (run(): `isolated`) purges each of them
    // in a subtransaction of its own: one that fails (a trigger refuses, a type changed)
    // hands its keys to queue rows of its own and the others go on. Only then: a
    // subtransaction per reference and batch would, with ~170 references to a users table,
    // overflow the backend's cache of 64 subtransaction ids, and every snapshot in the
    // cluster would read pg_subtrans while the batch runs. Alone, a reference's failure is
    // the batch's, retried with fewer keys and then backed off.
    MANY_REFERENCES.set(references.len() > 1);
    let isolate = references.len() > 1 && isolated.contains(&entry.id);
    for loaded in &references {
        let id = reference_id(loaded);
        CURRENT.set((entry.id, key_count, id));
        let outcome = match loaded {
            Err(unusable) if isolate => Err((unusable.message.clone(), "42804".to_string())),
            Err(unusable) => unusable.raise(),
            Ok(reference) if isolate => {
                in_transaction(Mode::Function, || purge_reference(reference, &entry)).map_err(
                    |failure| {
                        let code = failure.sql_error_code();
                        let cancelled = code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED;
                        // (A parent key that came back is the whole batch's to retry.)
                        let came_back = code == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE;
                        if cancelled && mode == Mode::Function
                            || came_back
                            || unsafe { pg_sys::ProcDiePending != 0 }
                        {
                            failure.rethrow();
                        }
                        (failure.message(), sqlstate(failure.sql_error_code()))
                    },
                )
            }
            Ok(reference) => Ok(purge_reference(reference, &entry)),
        };
        let (changed, limited) = match outcome {
            Ok(done) => done,
            Err((message, sqlstate)) => {
                let handed_to = as_extension_owner(|| hand_over(&entry, id));
                // Rows split from a merged batch are tried again in this run, each alone; a
                // row that failed alone waits (run()).
                let retry_now = !entry.merged.is_empty();
                failures.push(serde_json::json!({
                    "queue_entry": entry.id,
                    "handed_over_to": handed_to,
                    "retry_now": retry_now,
                    "reference": id,
                    "keys": key_count,
                    "sqlstate": sqlstate,
                    "message": message,
                }));
                continue;
            }
        };
        let Ok(reference) = loaded else {
            unreachable!("an unusable reference purges nothing")
        };
        hit_limit |= limited;
        rows.insert(
            reference.id,
            Touched {
                child: reference.child_oid,
                child_column: reference.child_column.clone(),
                parent: reference.parent_oid,
                on_delete: reference.on_delete.as_str().to_string(),
                rows: changed,
            },
        );
    }
    CURRENT.set((entry.id, key_count, 0));

    let pass_complete = match &entry.keys {
        Some(_) => entry.done_after >= entry.total_keys,
        None => !hit_limit,
    };
    // The merged rows were taken whole, with the entry's pass: they end it with the entry.
    let ids: Vec<i64> = std::iter::once(entry.id)
        .chain(entry.merged.iter().map(|(id, _)| *id))
        .collect();
    as_extension_owner(|| {
        if pass_complete && entry.final_pass {
            Spi::run_with_args(
                "DELETE FROM softfk.deletion WHERE id = ANY ($1)",
                &[ids.clone().into()],
            )
        } else {
            Spi::run_with_args(
                "UPDATE softfk.deletion
                    SET keys_done = $2, final_pass = $3,
                        -- (A value from another cluster counts for nothing here.)
                        final_after = CASE WHEN final_after IS NULL OR xid_cluster <> $5
                                           THEN $4::text::xid8 ELSE final_after END,
                        xid_cluster = $5
                  WHERE id = ANY ($1)",
                &[
                    ids.clone().into(),
                    (if pass_complete { 0 } else { entry.done_after }).into(),
                    (entry.final_pass || pass_complete).into(),
                    (next as i64).to_string().into(),
                    this_cluster().into(),
                ],
            )
        }
        .expect("updating softfk.deletion");
        for (reference, touched) in &rows {
            let changed = touched.rows;
            Spi::run_with_args(
                "INSERT INTO softfk.purge_total AS t
                        (reference_id, rows_deleted, rows_nulled, rows_archived, last_run_at)
                 VALUES ($1, $2, $3, $4, clock_timestamp())
                 ON CONFLICT (reference_id) DO UPDATE
                    SET rows_deleted = t.rows_deleted + $2, rows_nulled = t.rows_nulled + $3,
                        rows_archived = t.rows_archived + $4, last_run_at = clock_timestamp()",
                &[
                    (*reference).into(),
                    changed.deleted.into(),
                    changed.nulled.into(),
                    changed.archived.into(),
                ],
            )
            .expect("updating softfk.purge_total");
        }
    });
    Some(Batch {
        entry: entry.id,
        keys: key_count.into(),
        rows,
        failures,
    })
}

fn reference_id(loaded: &Result<Reference, registry::Unusable>) -> i64 {
    match loaded {
        Ok(reference) => reference.id,
        Err(unusable) => unusable.id,
    }
}

/// One reference of a batch failed: its keys of this batch become queue rows of their own,
/// for that reference alone, in the pass the entry's rows are in (a first pass whose batch
/// found nothing else running gets a first pass again; a final pass waits for the same
/// transactions), while the entry goes on for the other references. A
/// merged batch gives each row it merged a row of its own, so that one bad key waits alone.
/// Returns the new rows' ids.
fn hand_over(entry: &Entry, reference: i64) -> Vec<i64> {
    let mut slices: Vec<(i64, Option<Vec<String>>)> = Vec::new();
    match &entry.keys {
        None => slices.push((entry.id, None)),
        Some(keys) => {
            let own = keys.len() - entry.merged.iter().map(|(_, n)| n).sum::<usize>();
            let mut rest = keys[own..].iter().cloned();
            slices.push((entry.id, Some(keys[..own].to_vec())));
            for (id, n) in &entry.merged {
                slices.push((*id, Some(rest.by_ref().take(*n).collect())));
            }
        }
    }
    slices
        .into_iter()
        .flat_map(|(source, keys)| {
            Spi::connect_mut(|client| {
                client
                    .update(
                        "INSERT INTO softfk.deletion (parent_table, parent_column, keys, cause, deleted_by,
                                              deleted_at, final_pass, final_after, xid_cluster,
                                              reference_id)
                 SELECT d.parent_table, d.parent_column, $2, d.cause, d.deleted_by, d.deleted_at,
                        d.final_pass, d.final_after, d.xid_cluster, $3
                   FROM softfk.deletion d WHERE d.id = $1
                    -- (A whole-table purge that takes several batches hands over once.)
                    AND NOT ($2 IS NULL AND EXISTS (
                            SELECT FROM softfk.deletion o
                             WHERE o.reference_id = $3 AND o.keys IS NULL
                               AND o.parent_table = d.parent_table AND o.parent_column = d.parent_column))
                 RETURNING id",
                        None,
                        &[source.into(), keys.into(), reference.into()],
                    )
                    .expect("handing a reference's keys over to a queue row of its own")
                    .map(|row| row.get::<i64>(1).unwrap().unwrap())
                    .collect::<Vec<i64>>()
            })
        })
        .collect()
}

/// Whether a queue row other than `waiting` ones is ready (see [`take_entry`]).
fn work_is_ready(waiting: &[i64]) -> bool {
    let (_, horizon) = horizon();
    as_extension_owner(|| {
        read_one::<bool>(
            &format!(
                "SELECT EXISTS (SELECT FROM softfk.deletion d WHERE {} AND d.id <> ALL ($2))",
                ready()
            ),
            &[(horizon as i64).to_string().into(), waiting.to_vec().into()],
        )
    })
    .unwrap_or(false)
}

/// A queue row is ready when it has not had its first pass, or when every transaction that
/// was running at its first pass has ended (`$1`: the horizon), or when its first pass ran
/// in another cluster (restored from a dump: its transaction ids are not this cluster's,
/// and every transaction of that cluster has ended).
fn ready() -> String {
    format!(
        "(NOT d.final_pass OR d.final_after <= $1::text::xid8 OR d.xid_cluster <> {})",
        this_cluster()
    )
}

/// This cluster's system identifier, as softfk.deletion.xid_cluster stores it (bigint).
fn this_cluster() -> i64 {
    // SAFETY: reads a value the control file gave at startup.
    unsafe { pg_sys::GetSystemIdentifier() as i64 }
}

/// SQL: softfk.system_identifier() RETURNS bigint — the default of softfk.deletion.xid_cluster.
#[pg_extern(sql = false)]
fn system_identifier() -> i64 {
    this_cluster()
}

/// Lock and read the oldest queue row that is ready: not yet through its first pass, or
/// through it and past its horizon. Rows of this very transaction wait for it to commit, and
/// rows another run holds are skipped.
fn take_entry(
    horizon: u64,
    failed_entries: &[i64],
    keys_for_entry: &BTreeMap<i64, i32>,
) -> Option<Entry> {
    let default_keys = KEYS_PER_BATCH.get();
    // (connect_mut / update: FOR UPDATE needs a read-write SPI call.)
    Spi::connect_mut(|client| {
        let found = client
            .update(
                &format!(
                    "SELECT d.id, d.parent_table::oid, d.parent_column::text, d.keys IS NULL,
                            cardinality(d.keys), d.keys_done, d.final_pass, d.reference_id
                       FROM softfk.deletion d
                      WHERE {ready}
                        AND d.deleted_by IS DISTINCT FROM pg_current_xact_id_if_assigned()
                        AND d.id <> ALL ($2)
                      ORDER BY d.id
                      LIMIT 1
                        FOR UPDATE SKIP LOCKED",
                    ready = ready()
                ),
                None,
                &[
                    (horizon as i64).to_string().into(),
                    failed_entries.to_vec().into(),
                ],
            )
            .expect("reading softfk.deletion")
            .first();
        if found.is_empty() {
            return None;
        }
        let id: i64 = found.get(1).unwrap().unwrap();
        let every_key: bool = found.get(4).unwrap().unwrap();
        let total_keys: i32 = found.get(5).unwrap().unwrap_or(0);
        let keys_done: i32 = found.get(6).unwrap().unwrap();
        let take = *keys_for_entry.get(&id).unwrap_or(&default_keys);
        let keys = if every_key {
            None
        } else {
            Some(
                client
                    .select(
                        "SELECT keys[$2 + 1 : $2 + $3] FROM softfk.deletion WHERE id = $1",
                        None,
                        &[id.into(), keys_done.into(), take.into()],
                    )
                    .expect("reading softfk.deletion")
                    .first()
                    .get::<Vec<String>>(1)
                    .unwrap()
                    .unwrap_or_default(),
            )
        };
        let done_after = keys_done + keys.as_ref().map_or(0, |k| k.len() as i32);
        let mut entry = Entry {
            id,
            merged: Vec::new(),
            starts_pass: keys_done == 0,
            parent: found.get(2).unwrap().unwrap(),
            parent_column: found.get(3).unwrap().unwrap(),
            keys,
            done_after,
            total_keys,
            final_pass: found.get(7).unwrap().unwrap(),
            reference: found.get(8).unwrap(),
            locking_first: false,
        };
        let room = take - entry.keys.as_ref().map_or(take, |keys| keys.len() as i32);
        if keys_done == 0 && done_after == total_keys && room > 0 && entry.reference.is_none() {
            let (ids, more) = take_merged(
                client,
                &entry,
                horizon,
                failed_entries,
                keys_for_entry,
                room,
            );
            entry.merged = ids;
            entry.keys.as_mut().expect("a keyed entry").extend(more);
        }
        Some(entry)
    })
}

/// Whole queue rows to purge along with `entry` (a whole row itself, at the start of its
/// pass): later rows of the same parent column, in the same pass and ready, oldest first, as
/// long as their keys fit in `room`. Rows another run holds are skipped.
fn take_merged(
    client: &mut pgrx::spi::SpiClient<'_>,
    entry: &Entry,
    horizon: u64,
    failed_entries: &[i64],
    keys_for_entry: &BTreeMap<i64, i32>,
    room: i32,
) -> (Vec<(i64, usize)>, Vec<String>) {
    // Rows that failed, or are being retried with fewer keys, are not merged: they are taken
    // on their own, so a bad key stays with its own row.
    let excluded: Vec<i64> = failed_entries
        .iter()
        .copied()
        .chain(keys_for_entry.keys().copied())
        .collect();
    let candidates: Vec<(i64, i32)> = client
        .select(
            &format!(
                "SELECT d.id, cardinality(d.keys)
                   FROM softfk.deletion d
                  WHERE {ready}
                    AND d.parent_table::oid = $2 AND d.parent_column = $3 AND d.final_pass = $4
                    AND d.keys IS NOT NULL AND d.keys_done = 0 AND d.id > $5 AND d.reference_id IS NULL
                    AND d.deleted_by IS DISTINCT FROM pg_current_xact_id_if_assigned()
                    AND d.id <> ALL ($6)
                  ORDER BY d.id
                  LIMIT $7",
                ready = ready()
            ),
            None,
            &[
                (horizon as i64).to_string().into(),
                entry.parent.into(),
                entry.parent_column.as_str().into(),
                entry.final_pass.into(),
                entry.id.into(),
                excluded.into(),
                room.into(),
            ],
        )
        .expect("reading softfk.deletion")
        .map(|row| (row.get(1).unwrap().unwrap(), row.get(2).unwrap().unwrap_or(0)))
        .collect();
    let mut left = room;
    let fitting: Vec<i64> = candidates
        .into_iter()
        .take_while(|(_, n)| {
            left -= n;
            left >= 0
        })
        .map(|(id, _)| id)
        .collect();
    if fitting.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut ids = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for row in client
        .update(
            "SELECT d.id, d.keys FROM softfk.deletion d WHERE d.id = ANY ($1) ORDER BY d.id
                FOR UPDATE SKIP LOCKED",
            None,
            &[fitting.into()],
        )
        .expect("reading softfk.deletion")
    {
        let row_keys = row.get::<Vec<String>>(2).unwrap().unwrap_or_default();
        ids.push((row.get::<i64>(1).unwrap().unwrap(), row_keys.len()));
        keys.extend(row_keys);
    }
    (ids, keys)
}

/// The search_path purge statements run with: pg_softfk.child_search_path, or the pinned
/// one when it is empty. pg_temp goes last: otherwise it is searched first, and anyone's
/// temporary type could stand in for a type the statement names.
fn child_search_path() -> String {
    let path = CHILD_SEARCH_PATH
        .get()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if path.trim().is_empty() {
        return SAFE_SEARCH_PATH.1.to_string();
    }
    let mut schemas: Vec<&str> = path
        .split(',')
        .map(str::trim)
        .filter(|schema| !schema.trim_matches('"').eq_ignore_ascii_case("pg_temp"))
        .collect();
    schemas.push("pg_temp");
    schemas.join(", ")
}

/// Apply one reference's action for the entry's keys, in the child and each of its leaf
/// partitions. Returns the rows changed, and whether some statement hit the row limit (for a
/// whole-table entry, there may be more).
fn purge_reference(reference: &Reference, entry: &Entry) -> (Rows, bool) {
    let limit = ROWS_PER_STATEMENT.get();
    let owner = table_owner(reference.child_oid);
    let _check = ParentCheck::prepare(reference, owner);
    let mut rows = Rows::default();
    let mut hit_limit = false;
    let lock_timeout = LOCK_TIMEOUT.get().to_string();
    let search_path = child_search_path();
    // Set for each statement, and every setting the child's triggers change thrown away at
    // its end (with_settings): nothing one owner's trigger sets reaches the next statement.
    let settings = [
        (c"lock_timeout", lock_timeout.as_str()),
        (c"search_path", search_path.as_str()),
        KEY_DATESTYLE,
        KEY_INTERVALSTYLE,
        KEY_EXTRA_FLOAT_DIGITS,
    ];
    for leaf in as_extension_owner(|| leaves(reference)) {
        let pass = match (entry.final_pass, entry.locking_first) {
            (false, _) => Pass::First,
            (true, false) => Pass::Final,
            (true, true) => Pass::FinalLockingFirst,
        };
        let sql = reference.purge_sql(&leaf, pass);
        // The statement runs with the rights of the child's owner, as core's cascades do: its
        // triggers, defaults and constraints never run with more rights than that owner has.
        // As a restricted operation (as VACUUM runs index functions): they can create no
        // session state (temporary tables, prepared statements, held cursors, LISTEN, SET
        // ROLE) that would outlive the statement in the worker's long-lived session.
        let mut run = |keys: &[String]| {
            let changed =
                as_table_owner(owner, || with_settings(&settings, || execute(&sql, keys)));
            if !worker_still_holds_run_lock() {
                crate::error::error(
                    PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                    "the purge run lost its lock to another run while purging this table",
                )
                .detail("A trigger on the child table released the purge worker's advisory locks.")
                .raise();
            }
            // The final pass's first statement judged rows under its snapshot; a parent key
            // re-created since (by a transaction that held a row it then waited for, say)
            // makes the batch roll back and run again locking every row first (run()).
            // Checked only when rows changed; a key re-created before the purge began also
            // asks for that, which costs a slower batch, never a wrong one.
            if pass == Pass::Final && changed.count > 0 && parent_came_back(reference, keys) {
                crate::error::error(
                    PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                    "a parent key came back while the purge ran",
                )
                .raise();
            }
            match reference.on_delete {
                OnDelete::SetNull => rows.nulled += changed.count,
                OnDelete::Archive => {
                    as_extension_owner(|| archive(reference, &changed.archived));
                    rows.archived += changed.count;
                }
                OnDelete::Cascade | OnDelete::NoAction => rows.deleted += changed.count,
            }
            changed.count
        };
        match &entry.keys {
            Some(keys) => {
                // Keys per statement: about `limit` rows' worth, judged from the column's
                // statistics (one key's rows are never split).
                let rows_per_key =
                    as_extension_owner(|| rows_per_key(&leaf, &reference.child_column));
                let per_statement =
                    (f64::from(limit) / rows_per_key).clamp(1.0, keys.len().max(1) as f64) as usize;
                for chunk in keys.chunks(per_statement) {
                    run(chunk);
                }
            }
            None => {
                // Every orphan: a statement's worth of orphan keys at a time (the report's
                // anti-join, as the extension's owner), one round per leaf and batch. The
                // entry is done when a round finds none.
                let orphan_keys = as_extension_owner(|| {
                    with_settings(&KEY_TEXT_SETTINGS, || {
                        read_one::<Vec<String>>(&reference.orphan_keys_sql(&leaf), &[limit.into()])
                    })
                })
                .unwrap_or_default();
                // More may follow while a round changes rows; a round whose orphan rows are
                // all locked by others (skipped) changes none and leaves them to the final pass.
                // A round that finds the very keys the last one purged made no progress: in a
                // first pass, rows others hold (left to the final pass); in the final pass,
                // which waits for them, a trigger on the child that keeps the key — an error,
                // not an endless loop.
                if !orphan_keys.is_empty() {
                    let round = (entry.id, reference.id, leaf.clone());
                    let same_as_last =
                        LAST_ROUND.with_borrow(|last| last.get(&round) == Some(&orphan_keys));
                    if same_as_last && !entry.final_pass {
                        continue;
                    }
                    if same_as_last {
                        crate::error::error(
                            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!(
                                "purging {leaf} makes no progress: its orphan rows keep their keys"
                            ),
                        )
                        .detail("A trigger on the table may keep the key column as it was.")
                        .raise();
                    }
                    if run(&orphan_keys) > 0 {
                        hit_limit = true;
                        LAST_ROUND.with_borrow_mut(|last| last.insert(round, orphan_keys));
                    }
                }
            }
        }
    }
    (rows, hit_limit)
}

/// Every setting that changes how a key reads as text, pinned wherever keys become text.
const KEY_TEXT_SETTINGS: [(&std::ffi::CStr, &str); 3] =
    [KEY_DATESTYLE, KEY_INTERVALSTYLE, KEY_EXTRA_FLOAT_DIGITS];

/// Whether one of `keys` (all absent when queued) has a row in the reference's parent now,
/// under a new snapshot.
fn parent_came_back(reference: &Reference, keys: &[String]) -> bool {
    let absent = as_extension_owner(|| {
        with_settings(&KEY_TEXT_SETTINGS, || {
            read_one::<Vec<String>>(&reference.absent_keys_sql(), &[keys.to_vec().into()])
        })
    })
    .unwrap_or_default();
    absent.len() < keys.len()
}

/// Keys travel as text; the capture writes them with these settings (sql/purge.sql), and the
/// purge reads them back with the same, whatever the session's: a timestamp key written under
/// `DateStyle = 'SQL, DMY'` still reads as the same instant.
const KEY_DATESTYLE: (&std::ffi::CStr, &str) = (c"datestyle", "ISO, YMD");
const KEY_INTERVALSTYLE: (&std::ffi::CStr, &str) = (c"intervalstyle", "postgres");
/// Floats as the shortest text that reads back exactly (extra_float_digits > 0): with a
/// session's `extra_float_digits = -10`, `0.1234567890123` would be queued as `0.12346`.
const KEY_EXTRA_FLOAT_DIGITS: (&std::ffi::CStr, &str) = (c"extra_float_digits", "1");

fn table_owner(table: pg_sys::Oid) -> pg_sys::Oid {
    as_extension_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1",
                    None,
                    &[table.into()],
                )
                .expect("reading pg_class")
                .first()
                .get::<pg_sys::Oid>(1)
                .expect("relowner")
                .expect("the child table exists")
        })
    })
}

/// Move rows a purge statement deleted ('archive') into softfk.archived_row.
fn archive(reference: &Reference, archived: &[(String, String)]) {
    if archived.is_empty() {
        return;
    }
    let (keys, rows): (Vec<&str>, Vec<&str>) = archived
        .iter()
        .map(|(k, r)| (k.as_str(), r.as_str()))
        .unzip();
    Spi::run_with_args(
        "INSERT INTO softfk.archived_row (child_table, child_column, parent_table, key, child_row)
         SELECT $1::oid::regclass, $2, $3::oid::regclass, a.key, a.child_row::jsonb
           FROM unnest($4::text[], $5::text[]) AS a (key, child_row)",
        &[
            reference.child_oid.into(),
            reference.child_column.as_str().into(),
            reference.parent_oid.into(),
            keys.into(),
            rows.into(),
        ],
    )
    .expect("writing softfk.archived_row");
}

/// The relations a purge statement targets: the child, or each leaf partition of it.
fn leaves(reference: &Reference) -> Vec<String> {
    if !reference.child_partitioned {
        return vec![reference.child_table.clone()];
    }
    Spi::connect(|client| {
        client
            .select(
                "SELECT format('%I.%I', n.nspname, c.relname)
                   FROM pg_catalog.pg_partition_tree($1) t
                   JOIN pg_catalog.pg_class c ON c.oid = t.relid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE t.isleaf AND c.relkind = 'r'
                  ORDER BY c.oid",
                None,
                &[reference.child_oid.into()],
            )
            .expect("reading pg_partition_tree")
            .map(|row| row.get::<String>(1).unwrap().unwrap())
            .collect()
    })
}

/// The average number of rows per key value in `leaf`.`column`, from its statistics (1 when
/// it has none: never analyzed).
fn rows_per_key(leaf: &str, column: &str) -> f64 {
    read_one::<f64>(
        "SELECT (SELECT CASE WHEN s.stadistinct > 0 THEN greatest(c.reltuples, 1) / s.stadistinct
                             WHEN s.stadistinct < 0 THEN -1 / s.stadistinct END::float8
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2
                   JOIN pg_catalog.pg_statistic s
                     ON s.starelid = c.oid AND s.staattnum = a.attnum AND NOT s.stainherit
                  WHERE c.oid = $1::pg_catalog.regclass)",
        &[leaf.into(), column.into()],
    )
    .filter(|rows| rows.is_finite() && *rows >= 1.0)
    .unwrap_or(1.0)
}

/// What one purge statement did: rows changed, and for 'archive' the rows it deleted as
/// (key, row as jsonb) text.
struct Changed {
    count: i64,
    archived: Vec<(String, String)>,
}

/// Run the purge statements of one pass over one leaf for `keys` ([`PurgeSql`]).
fn execute(sql: &PurgeSql, keys: &[String]) -> Changed {
    let timeout = if unsafe { pg_sys::IsBackgroundWorker } {
        STATEMENT_TIMEOUT.get()
    } else {
        0
    };
    let armed = || (timeout > 0).then(|| StatementTimeout::arm(timeout));
    Spi::connect_mut(|client| {
        let mut changed = Changed {
            count: 0,
            archived: Vec::new(),
        };
        let mut take = |result: pgrx::spi::SpiTupleTable| {
            changed.count += result.len() as i64;
            if result.columns().unwrap_or(0) == 2 {
                changed.archived.extend(result.map(|row| {
                    (
                        row.get::<String>(1).unwrap().unwrap(),
                        row.get::<String>(2).unwrap().unwrap(),
                    )
                }));
            }
        };
        match sql {
            PurgeSql::One(statement) => {
                let _armed = armed();
                take(
                    client
                        .update(statement, None, &[keys.to_vec().into()])
                        .expect("running a purge statement"),
                );
            }
            PurgeSql::LockThenAct { lock, act } => {
                let locked = {
                    let _armed = armed();
                    client
                        .update(lock, None, &[keys.to_vec().into()])
                        .expect("locking the rows of a final purge pass")
                        .first()
                        .get::<Vec<String>>(1)
                        .expect("reading the locked rows")
                        .unwrap_or_default()
                };
                if !locked.is_empty() {
                    let _armed = armed();
                    take(
                        client
                            .update(act, None, &[keys.to_vec().into(), locked.into()])
                            .expect("running a purge statement"),
                    );
                }
            }
        }
        changed
    })
}

/// The worker's statement timeout, disarmed when dropped: after the statement, or when an
/// error unwinds past it (a timer left armed would cancel whatever runs next).
struct StatementTimeout;

impl StatementTimeout {
    fn arm(milliseconds: i32) -> StatementTimeout {
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT_ID, milliseconds) };
        StatementTimeout
    }
}

impl Drop for StatementTimeout {
    fn drop(&mut self) {
        unsafe { disable_timeout(STATEMENT_TIMEOUT_ID, false) };
    }
}

// utils/timeout.h (not in pgrx's bindings). The worker arms STATEMENT_TIMEOUT itself: core
// arms it only around client statements.
const STATEMENT_TIMEOUT_ID: i32 = 3;
extern "C" {
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
}

/// `(next, horizon)`: the next transaction id to be assigned, and the oldest transaction id
/// still running other than this transaction's own (`next` when there is none). Every other
/// transaction below `horizon` has ended.
///
/// Read from a fresh snapshot: ids in its list are running; so is every id from its xmax
/// (one past the latest completed id) up to `next` (read after it), since none of those has
/// completed.
fn horizon() -> (u64, u64) {
    unsafe {
        // Snapshot first, next id second: every id in the snapshot is then below `next`.
        let snapshot = pg_sys::GetLatestSnapshot();
        let next = pg_sys::ReadNextFullTransactionId().value;
        let full = |xid: pg_sys::TransactionId| -> u64 {
            // Ids in a snapshot are within 2^31 of next: widen them by next's epoch.
            let diff = (next as u32).wrapping_sub(u32::from(xid));
            next - u64::from(diff)
        };
        let own = |xid: pg_sys::TransactionId| pg_sys::TransactionIdIsCurrentTransactionId(xid);
        let mut oldest = next;
        for i in 0..(*snapshot).xcnt as usize {
            let xid = *(*snapshot).xip.add(i);
            if !own(xid) {
                oldest = oldest.min(full(xid));
            }
        }
        let mut id = full((*snapshot).xmax);
        while id < next {
            if !own(pg_sys::TransactionId::from(id as u32)) {
                oldest = oldest.min(id);
                break;
            }
            id += 1;
        }
        (next, oldest)
    }
}

/// Whether this database subscribes to logical replication (and pg_softfk.purge_on_subscriber
/// is off), so that the purge must not run here: with `FOR ALL TABLES` the softfk tables are
/// replicated, the publisher's purge arrives as replicated changes, and a local one would
/// collide with them.
pub fn replica_of_a_publisher() -> bool {
    !ON_SUBSCRIBER.get()
        && as_extension_owner(|| {
            // The queue itself subscribed (a subscription naming other tables, or one left
            // over from an upgrade by logical replication, does not count).
            read_one::<bool>(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_subscription_rel r
                                 WHERE r.srrelid = 'softfk.deletion'::pg_catalog.regclass)",
                &[],
            )
        })
        .unwrap_or(false)
}

/// SQL: softfk_purge() RETURNS TABLE (child regclass, child_column text, parent regclass,
///   on_delete text, rows bigint)
/// Run the purge now, in this transaction, and say per reference how many rows it changed.
#[pg_extern(sql = false)]
fn softfk_purge() -> TableIterator<
    'static,
    (
        name!(child, pg_sys::Oid),
        name!(child_column, String),
        name!(parent, pg_sys::Oid),
        name!(on_delete, String),
        name!(rows, i64),
    ),
> {
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        crate::error::error(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "softfk_purge() must run at isolation level READ COMMITTED",
        )
        .detail("Each purge statement must see the rows committed since the transaction began.")
        .raise();
    }
    if replica_of_a_publisher() {
        crate::error::error(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "softfk_purge() does not run in a database that subscribes to logical replication",
        )
        .detail("The publisher's purge arrives here as replicated changes.")
        .hint("Run it on the publisher; or, where the softfk tables are not replicated, SET pg_softfk.purge_on_subscriber = on.")
        .raise();
    }
    let report = run(Mode::Function).expect("softfk_purge() waits for the run lock");
    let rows: Vec<_> = report
        .rows
        .into_values()
        .filter(|touched| touched.rows.total() > 0)
        .map(|t| {
            (
                t.child,
                t.child_column,
                t.parent,
                t.on_delete,
                t.rows.total(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// SQL: softfk_restore(parent regclass, key text) RETURNS bigint
/// Put back every child row archived after parent key `key` was deleted (re-create the parent
/// first: validated references check the restored rows). The rows are inserted with the
/// caller's rights; they leave the archive in the same transaction.
///
/// A row is put back as it was archived, into the child as it is now: its columns by name,
/// generated columns computed afresh, columns added since the archiving given their defaults.
/// A row with a value for a column the child no longer has (dropped or renamed since) is
/// refused, with nothing restored and nothing taken out of the archive: no value is dropped
/// silently.
#[pg_extern(sql = false)]
fn softfk_restore(parent: Option<pg_sys::Oid>, key: Option<&str>) -> i64 {
    let parent = crate::error::required(parent, "parent");
    let key = crate::error::required(key, "key");
    let archived: Vec<(pg_sys::Oid, String)> = as_extension_owner(|| {
        Spi::connect_mut(|client| {
            client
                .update(
                    "WITH taken AS (
                        DELETE FROM softfk.archived_row WHERE parent_table = $1 AND key = $2
                        RETURNING id, child_table, child_row)
                     SELECT child_table::oid, child_row::text FROM taken ORDER BY id",
                    None,
                    &[parent.into(), key.into()],
                )
                .expect("reading softfk.archived_row")
                .map(|row| (row.get(1).unwrap().unwrap(), row.get(2).unwrap().unwrap()))
                .collect()
        })
    });
    for (child, row) in &archived {
        let (table, columns, unknown) = restorable_columns(*child, row);
        if !unknown.is_empty() {
            crate::error::error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "cannot restore archived rows of table {table}: it has no column {}",
                    unknown.join(", ")
                ),
            )
            .detail("The rows were archived with these columns, which were renamed or dropped since. Nothing was restored.")
            .hint("Add or rename the columns back, restore, then change the table again.")
            .raise();
        }
        let list = columns.join(", ");
        Spi::run_with_args(
            &format!(
                "INSERT INTO {table} ({list}) OVERRIDING SYSTEM VALUE \
                 SELECT {list} FROM pg_catalog.jsonb_populate_record(NULL::{table}, $1::pg_catalog.jsonb)"
            ),
            &[row.as_str().into()],
        )
        .expect("restoring an archived row");
    }
    archived.len() as i64
}

/// For an archived row (jsonb text) of `child`: the table's name, its columns the row holds a
/// value for that take one (not generated), quoted, and the row's keys that name no column.
fn restorable_columns(child: pg_sys::Oid, row: &str) -> (String, Vec<String>, Vec<String>) {
    Spi::connect(|client| {
        let found = client
            .select(
                "SELECT $1::pg_catalog.regclass::pg_catalog.text,
                        pg_catalog.array_agg(pg_catalog.quote_ident(a.attname) ORDER BY a.attnum)
                            FILTER (WHERE a.attgenerated = ''),
                        pg_catalog.array_agg(pg_catalog.quote_ident(k.key) ORDER BY k.key)
                            FILTER (WHERE a.attname IS NULL)
                   FROM pg_catalog.jsonb_object_keys($2::pg_catalog.jsonb) AS k (key)
                   LEFT JOIN pg_catalog.pg_attribute a
                          ON a.attrelid = $1 AND a.attname = k.key AND a.attnum > 0
                         AND NOT a.attisdropped",
                None,
                &[child.into(), row.into()],
            )
            .expect("reading the child's columns")
            .first();
        (
            found.get::<String>(1).unwrap().unwrap_or_default(),
            found.get::<Vec<String>>(2).unwrap().unwrap_or_default(),
            found.get::<Vec<String>>(3).unwrap().unwrap_or_default(),
        )
    })
}

/// SQL: softfk.absent_keys(reference bigint, keys text[]) RETURNS text[]
/// The keys (as text) that have no row in the reference's parent: the parent check inside
/// each purge statement. The statement runs as the child's owner, who may not read the parent;
/// this reads it as the extension's owner, under the calling statement's snapshot (the
/// function is STABLE), for a caller that owns the child or may read the parent.
#[pg_extern(sql = false)]
fn absent_keys(reference: i64, keys: Vec<String>) -> Option<Vec<String>> {
    let caller = unsafe { pg_sys::GetUserId() };
    let prepared = PARENT_CHECK.with_borrow(|check| match check {
        Some((id, role, sql)) if *id == reference && *role == caller => Some(sql.clone()),
        _ => None,
    });
    let sql = match prepared {
        Some(sql) => sql,
        None => absent_keys_sql_for(reference, caller),
    };
    as_extension_owner(|| {
        with_settings(&KEY_TEXT_SETTINGS, || {
            read_one::<Vec<String>>(&sql, &[keys.into()])
        })
    })
}

thread_local! {
    /// The parent check of the purge statements being run: (reference, the child's owner they
    /// run as, the query), so that softfk.absent_keys need not load and check the reference
    /// for every statement.
    static PARENT_CHECK: std::cell::RefCell<Option<(i64, pg_sys::Oid, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`PARENT_CHECK`] for one reference's statements, forgotten when dropped.
struct ParentCheck;

impl ParentCheck {
    fn prepare(reference: &Reference, owner: pg_sys::Oid) -> ParentCheck {
        PARENT_CHECK.set(Some((reference.id, owner, reference.absent_keys_sql())));
        ParentCheck
    }
}

impl Drop for ParentCheck {
    fn drop(&mut self) {
        PARENT_CHECK.set(None);
    }
}

/// The parent check of a reference for a caller outside the purge: only for the child's
/// owner or a role that may read the parent.
fn absent_keys_sql_for(reference: i64, caller: pg_sys::Oid) -> String {
    let (allowed, loaded) = as_extension_owner(|| {
        let allowed = read_one::<bool>(
            "SELECT pg_catalog.pg_has_role($2, c.relowner, 'USAGE')
                 OR pg_catalog.has_table_privilege($2, r.parent_table, 'SELECT')
               FROM softfk.reference r JOIN pg_catalog.pg_class c ON c.oid = r.child_table
              WHERE r.id = $1",
            &[reference.into(), caller.into()],
        );
        (
            allowed,
            registry::load(registry::Which::Id(reference)).pop(),
        )
    });
    let Some(reference) = loaded else {
        crate::error::error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("soft reference {reference} does not exist"),
        )
        .raise()
    };
    if allowed != Some(true) {
        crate::error::error(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for the parent of soft reference {}", reference.id),
        )
        .detail("Only the child's owner, or a role that may read the parent, may ask which keys it lacks.")
        .raise();
    }
    reference.absent_keys_sql()
}
