//! Capture: recording deleted parent keys for the purge.
//!
//! Every parent table with soft references carries three triggers (sql/capture.sql):
//! a statement-level AFTER DELETE trigger with a transition table, which writes every key the
//! statement deleted in one INSERT (a queue row per 1000 keys), whatever the row count; a
//! row-level AFTER UPDATE OF the key columns, which fires only when a referenced key changes
//! (the old key counts as deleted), so the hot path of a users table (UPDATE last_login) pays
//! nothing; and AFTER TRUNCATE, which queues "every key".
//!
//! The queue is written in the deleting transaction, so it commits or rolls back with the
//! delete. At commit, the database's purge worker is woken (src/worker/): purging starts
//! at once instead of at the next poll.

use std::cell::Cell;

use pgrx::prelude::*;

use crate::postgres::roles::as_extension_owner;
use crate::postgres::transaction::{self, TransactionEnd};
use crate::worker;

/// Make `parent`'s capture triggers name exactly the columns the registry references (none
/// when nothing references it). Called after every change to the registry.
///
/// The triggers are created as the extension's owner: like the triggers core puts on a
/// referenced table for a foreign key, they need no TRIGGER privilege from the registering
/// user, who holds REFERENCES on the parent.
pub fn sync(parent: pg_sys::Oid) {
    as_extension_owner(|| {
        Spi::run_with_args("SELECT softfk.sync_capture($1)", &[parent.into()])
            .expect("installing the capture triggers")
    });
}

thread_local! {
    /// Whether this backend's end-of-transaction handler is registered (once, for good).
    static HANDLER_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// Whether the current transaction queued deleted keys.
    static WAKE_AT_COMMIT: Cell<bool> = const { Cell::new(false) };
}

/// SQL: softfk.wake_purge_at_commit() RETURNS void
/// Called by the capture trigger: when this transaction commits, wake the purge worker of
/// this database. Without the worker (no shared_preload_libraries) it does nothing.
#[pg_extern(sql = false)]
fn wake_purge_at_commit() {
    if !worker::is_loaded() {
        return;
    }
    WAKE_AT_COMMIT.set(true);
    if !HANDLER_REGISTERED.get() {
        transaction::on_transaction_end(at_transaction_end);
        HANDLER_REGISTERED.set(true);
    }
}

fn at_transaction_end(end: TransactionEnd) {
    // At COMMIT the transaction is visible to others: the woken worker sees the queue rows.
    // (A prepared transaction's deletions are woken by its COMMIT PREPARED:
    // src/worker/give_way.rs.)
    if WAKE_AT_COMMIT.replace(false) && end == TransactionEnd::Commit {
        worker::wake_database();
    }
}
