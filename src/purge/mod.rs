//! The purge engine: applies each reference's on_delete action to the child rows of deleted
//! parent keys. The background worker (src/worker/) and `softfk_purge()` both run it.
//!
//! Work comes from the queue `softfk.deletion` (filled by the capture, src/capture.rs and sql/capture.sql) in *batches*: a
//! batch takes the oldest ready queue row, purges up to `pg_softfk.keys_per_batch` of its keys
//! in every child that references the parent (each statement touching about
//! `pg_softfk.rows_per_statement` rows), records the keys as done, and updates the totals, all
//! in one transaction. A crash before the commit loses the whole batch and the queue still
//! holds its keys: work is redone, never lost and never applied twice. No child-row lock is
//! held longer than one batch.
//!
//! Every purge statement re-checks, under its own snapshot, that the parent key is still
//! absent (src/catalog/query.rs builds the statements): a user re-created with the same key keeps its
//! rows.
//!
//! **The race window.** A child row can pass its check just before the parent's DELETE
//! commits and then commit as an orphan, but only in a transaction that already had its
//! transaction id when the delete committed. So a key gets a *first pass* as soon as the
//! delete commits, which skips rows other transactions have locked (`SKIP LOCKED`), and
//! records `final_after`: the next transaction id at that moment. Once every transaction
//! below it has ended ([`horizon`]), the *final pass* purges again, this time waiting for
//! row locks (up to `pg_softfk.lock_timeout`). After it, a key checked by validation can gain no
//! new child row. If nothing else was running when the first pass began, that pass is final.
//!
//! A key with more than `pg_softfk.rows_per_statement` rows (a bot account's) is purged that
//! many rows per statement and batch, and between its batches goes to the back of the queue,
//! so that the keys deleted after it are not held back (its final pass is bounded when the key
//! is known to be big: docs/design.md).
//! `pg_softfk.batch_delay` pauses the worker after each batch, to leave a busy machine to
//! the application while a large backlog drains.
//!
//! A batch that fails on a lock or statement timeout is rolled back and retried with half the
//! keys; one that still fails with a single key is left for the next run and logged.
//!
//! | module           | what it does                                                     |
//! |------------------|------------------------------------------------------------------|
//! | this one         | the run loop and its retry policy                                |
//! | [`queue`]        | taking queue rows as batches, handing keys over, marking done    |
//! | [`batch`]        | one batch: the statements of each reference, on each leaf        |
//! | [`parent_check`] | `softfk.absent_keys`, the parent check inside every statement    |
//! | [`scan`]         | a large backlog's two passes, each child read in physical order  |
//! | [`table_locks`]  | a batch's table locks, taken up front; the worker gives way      |
//! | [`archive`]      | on_delete 'archive' and `softfk_restore`                         |
//! | [`horizon`]      | which transactions may still commit an orphan                    |
//! | [`run_lock`]     | one run at a time per database                                   |
//! | [`run_log`]      | `softfk.purge_run` and `softfk.purge_total`                      |
//! | [`backoff`]      | how long a failing queue row waits                               |

pub mod archive;
mod backoff;
mod batch;
pub mod horizon;
mod parent_check;
pub mod queue;
mod run_lock;
mod run_log;
mod scan;
mod table_locks;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::reference::{OnDelete, Reference};
use crate::postgres::error::sqlstate;
use crate::postgres::process;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::read_one;
use crate::postgres::transaction::{self, Failure, Scope};
use crate::settings::{BATCH_DELAY, KEYS_PER_BATCH, PURGE_ON_SUBSCRIBER};
use backoff::Backoff;
pub use run_lock::end_worker_run;

/// How a run isolates its batches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The background worker: each batch is a transaction of its own.
    Worker,
    /// softfk_purge(): each batch is a subtransaction of the caller's transaction.
    Function,
}

impl Mode {
    /// Where its batches run.
    fn scope(self) -> Scope {
        match self {
            Mode::Worker => Scope::Transaction,
            Mode::Function => Scope::Subtransaction,
        }
    }

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
    pub on_delete: OnDelete,
    pub rows: Rows,
}

impl Touched {
    /// `rows` changed in `reference`'s child.
    fn of(reference: &Reference, rows: Rows) -> Touched {
        Touched {
            child: reference.child_oid,
            child_column: reference.child_column.clone(),
            parent: reference.parent_oid,
            on_delete: reference.on_delete,
            rows,
        }
    }
}

/// What a run did.
#[derive(Default)]
pub struct RunReport {
    pub batches: i64,
    pub keys: i64,
    /// Per reference id.
    pub rows: BTreeMap<i64, Touched>,
    pub errors: Vec<serde_json::Value>,
    /// Of `errors`, the batches that gave way to another session's table lock.
    pub gave_way: usize,
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

/// Run the purge until no queue row is ready, or until `stop` says so between two batches
/// (the worker is asked to make room for another database). `None` when another run holds
/// the database (only the worker gives way; softfk_purge() waits for it).
pub fn run(mode: Mode, stop: &dyn Fn() -> bool) -> Option<RunReport> {
    if !in_transaction(mode, run_lock::begin_run(mode)).unwrap_or_else(|e| e.rethrow()) {
        return None;
    }
    // Entries that failed even with one key wait for the next run (the worker's: until their
    // backoff has passed); entries that timed out are retried with fewer keys.
    let mut failed_entries: Vec<i64> = match mode {
        Mode::Worker => Backoff::waiting(),
        Mode::Function => Vec::new(),
    };
    in_transaction(mode, queue::adopt_rows_of_other_clusters).unwrap_or_else(|e| e.rethrow());
    // The worker logs a run only when there is work; an explicit softfk_purge() always.
    if mode == Mode::Worker
        && !in_transaction(mode, || queue::work_is_ready(&failed_entries))
            .unwrap_or_else(|e| e.rethrow())
    {
        return Some(RunReport::default());
    }
    if stop() {
        return Some(RunReport::default());
    }
    let run_id = in_transaction(mode, run_log::start(mode)).unwrap_or_else(|e| e.rethrow());
    let mut report = RunReport::default();
    batch::forget_last_rounds();
    let mut keys_for_entry: BTreeMap<i64, i32> = BTreeMap::new();
    // Entries whose batch failed with several references: retried one reference at a time.
    let mut isolated = BTreeSet::new();
    // Entries whose final pass saw a parent key come back: retried locking every row first.
    let mut locking_first = BTreeSet::new();
    // A pass in physical order failed: the rest of the run goes key by key.
    let mut scan_failed = false;
    loop {
        if mode == Mode::Worker {
            pg_sys::check_for_interrupts!();
        }
        if stop() {
            break;
        }
        let outcome = in_transaction(mode, || {
            batch::run(
                mode,
                &failed_entries,
                &keys_for_entry,
                &isolated,
                &locking_first,
                !scan_failed,
            )
        });
        match outcome {
            Ok(None) => break,
            Ok(Some(done)) => {
                // The worker's throttle (pg_softfk.batch_delay): a pause after each batch.
                let delay = BATCH_DELAY.get();
                if mode == Mode::Worker && delay > 0 {
                    process::pause(Duration::from_millis(delay as u64));
                }
                Backoff::succeeded(done.entry);
                for failure in done.failures {
                    // (A reference that gave way to another session's table lock did not fail.)
                    let gave_way = failure["gave_way"] == true;
                    if let (Some(reference), Some(message), false) = (
                        failure["reference"].as_i64(),
                        failure["message"].as_str(),
                        gave_way,
                    ) {
                        let message = message.to_string();
                        let _ = in_transaction(mode, || run_log::record_error(reference, &message));
                    }
                    // The row the keys went to has just failed: it waits for the next run
                    // (the worker's: for its backoff), as a row that failed on its own does.
                    if failure["retry_now"] == false {
                        for handed_to in failure["handed_over_to"].as_array().into_iter().flatten()
                        {
                            let handed_to = handed_to.as_i64().expect("a queue row id");
                            failed_entries.push(handed_to);
                            match (mode, gave_way) {
                                (Mode::Worker, true) => Backoff::gave_way(handed_to),
                                (Mode::Worker, false) => Backoff::failed(handed_to),
                                (Mode::Function, _) => {}
                            }
                        }
                    }
                    if gave_way {
                        report.gave_way += 1;
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
                let (entry, keys, reference) = batch::CURRENT.get();
                // A lock timeout, or the worker's own statement timeout. Under softfk_purge() a
                // cancel is the caller's (statement_timeout, Ctrl-C): it ends the call.
                let timed_out = match error.sql_error_code() {
                    PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE => true,
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED if mode == Mode::Worker => true,
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED => error.rethrow(),
                    _ => false,
                };
                if entry == 0 || mode == Mode::Worker && process::termination_requested() {
                    error.rethrow();
                }
                // A pass in physical order that fails goes on key by key, from its first key,
                // where a failing reference is isolated from the others and its keys handed
                // over. The rest of the run goes key by key.
                let mut detail = serde_json::json!({
                    "queue_entry": entry,
                    "reference": reference,
                    "keys": keys,
                    "sqlstate": sqlstate(error.sql_error_code()),
                    "message": error.message(),
                });
                // The worker gave way to another session's table lock: nothing failed, and
                // the queue rows for the same references wait a little (each would give way
                // too).
                if table_locks::GAVE_WAY.get()
                    && error.sql_error_code() == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE
                {
                    let waiting =
                        in_transaction(mode, || as_extension_owner(|| queue::rows_like(entry)))
                            .unwrap_or_else(|e| e.rethrow());
                    for row in waiting {
                        failed_entries.push(row);
                        Backoff::gave_way(row);
                    }
                    report.gave_way += 1;
                    report.errors.push(detail);
                    continue;
                }
                if batch::SCANNING.get() {
                    in_transaction(mode, || as_extension_owner(|| queue::stop_scan(entry)))
                        .unwrap_or_else(|e| e.rethrow());
                    keys_for_entry.insert(entry, KEYS_PER_BATCH.get());
                    scan_failed = true;
                    detail["then"] = "key by key".into();
                    report.errors.push(detail);
                    continue;
                }
                // A parent key came back while the final pass ran: retried locking first.
                if error.sql_error_code() == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
                    && locking_first.insert(entry)
                {
                    continue;
                }
                // A final pass that hit the worker's statement timeout may hold a key with more
                // rows than one statement can take, which the statistics did not know: retried
                // locking first, which bounds each statement in rows.
                if error.sql_error_code() == PgSqlErrorCode::ERRCODE_QUERY_CANCELED
                    && batch::FINAL_PASS.get()
                    && locking_first.insert(entry)
                {
                    continue;
                }
                // A batch of several references is retried with each in a subtransaction of its
                // own: the failing one hands its keys over, the others are purged.
                if batch::MANY_REFERENCES.get() && isolated.insert(entry) {
                    continue;
                }
                // A batch that merged later rows is retried with its own row alone first, so
                // that one bad key in a merged row never holds back the keys before it.
                if let Some(own_keys) = batch::OWN_KEYS.get() {
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
                report.errors.push(detail);
                if reference != 0 {
                    let message = error.message().to_string();
                    let _ = in_transaction(mode, || run_log::record_error(reference, &message));
                }
            }
        }
    }
    in_transaction(mode, || run_log::finish(run_id, &report)).unwrap_or_else(|e| e.rethrow());
    Some(report)
}

/// Run `f` as one of `mode`'s batches: a transaction of its own (worker) or a
/// subtransaction (softfk_purge()).
fn in_transaction<R>(mode: Mode, f: impl FnOnce() -> R) -> Result<R, Failure> {
    transaction::in_transaction(mode.scope(), f)
}

/// Whether this database subscribes to logical replication (and pg_softfk.purge_on_subscriber
/// is off), so that the purge must not run here: with `FOR ALL TABLES` the softfk tables are
/// replicated, the publisher's purge arrives as replicated changes, and a local one would
/// collide with them.
pub fn replica_of_a_publisher() -> bool {
    !PURGE_ON_SUBSCRIBER.get()
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
