//! Keys already verified by the batch of check events firing now, so that a million rows over
//! a hundred thousand users probe the parent a hundred thousand times, not a million.
//!
//! Core queues one after-trigger event per child row and fires a transaction's (or a
//! statement's) queued events together: at the end of the statement for `immediate`, at
//! COMMIT or `SET CONSTRAINTS ... IMMEDIATE` for `deferred`. Each firing runs in an executor
//! state of its own (COMMIT's and SET CONSTRAINTS' are made for it; the end of a statement
//! uses the statement's, whose rounds of events queued by other triggers count as one batch),
//! and there a fresh `FmgrInfo` for the check function of each table
//! (`ResultRelInfo.ri_TrigFunctions`, `fn_extra` zeroed). So the `FmgrInfo` names the batch: the
//! first event of a batch finds `fn_extra` NULL and gives it a token; later events of the same
//! batch find the same token, and with it the keys the batch has already found in the parent.
//!
//! Why remembering a key for the rest of the batch is sound: the events of one batch run one
//! after another with no statement of the application in between, so a key found at the
//! batch's first event of it would be found again at its last, but for a parent DELETE
//! committed by another session meanwhile — the race window every check has (README), which
//! the purge closes. What this transaction itself does in between, it does through other
//! triggers of the same batch (a user's trigger that deletes the parent). Each event asks for
//! a new command id, which PostgreSQL grants only when the current one has been used by a
//! write (`CommandCounterIncrement`, what every statement of a trigger does first anyway), and
//! a batch whose command id or subtransaction has changed since it last found a key forgets
//! what it found. Nothing is remembered from
//! one batch to the next: a later statement, or COMMIT, probes again.
//!
//! Why a token can't be confused with another batch's: the token is memory allocated for the
//! batch (in the `FmgrInfo`'s context), with a callback that forgets the batch when that
//! memory is freed; a batch that starts also replaces whatever was kept under its address;
//! and everything is forgotten at the end of the transaction.
//!
//! Memory: the sets may use `pg_softfk.check_dedup_memory` (default 16MB) in all, their hash
//! tables counted exactly (buckets × (entry + control byte), and both tables while one
//! doubles) plus the bytes of keys that are not a single word. A key that does not fit is
//! simply probed each time.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::postgres::transaction;
use crate::settings::CHECK_DEDUP_MEMORY;

/// A key as stored bytes: by-value types as their datum word, others as their contents.
/// Equal bytes of one type are equal values; equal values with different bytes (numeric 1.0
/// and 1.00) are merely probed twice.
#[derive(PartialEq, Eq, Hash)]
pub enum KeyBytes {
    Word(u64),
    Bytes(Box<[u8]>),
}

impl KeyBytes {
    /// Bytes held outside the hash table (an allocation's header counted as 16).
    fn heap_bytes(&self) -> usize {
        match self {
            KeyBytes::Word(_) => 0,
            KeyBytes::Bytes(bytes) => bytes.len() + 16,
        }
    }
}

/// The keys one batch found in the parent, as of one command of one subtransaction.
#[derive(Default)]
struct Batch {
    keys: HashSet<KeyBytes>,
    found_at: (pg_sys::CommandId, pg_sys::SubTransactionId),
    /// Sum of the keys' heap_bytes().
    key_heap_bytes: usize,
}

impl Batch {
    fn bytes(&self) -> usize {
        table_bytes(self.keys.capacity()) + self.key_heap_bytes
    }

    /// The bytes once one more key of `new_heap_bytes` is in (inserting into a full table
    /// doubles it, and both tables exist while it is copied).
    fn bytes_with_one_more(&self, new_heap_bytes: usize) -> usize {
        let capacity = self.keys.capacity();
        let table = if self.keys.len() < capacity {
            table_bytes(capacity)
        } else {
            table_bytes(capacity) + table_bytes((capacity.max(3) + 1) * 2)
        };
        table + self.key_heap_bytes + new_heap_bytes
    }
}

/// The bytes of a hash set with room for `capacity` keys: hashbrown keeps at least 8/7 as
/// many buckets, a power of two, each a key plus one control byte.
fn table_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).max(capacity + 1).next_power_of_two();
    buckets * (size_of::<KeyBytes>() + 1)
}

#[derive(Default)]
struct Batches {
    /// By token (the address kept in the check function's `fn_extra`).
    by_token: HashMap<usize, Batch>,
    /// Sum of the batches' bytes().
    bytes: usize,
}

thread_local! {
    static BATCHES: RefCell<Batches> = RefCell::new(Batches::default());
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// The batch of events the check function with this `FmgrInfo` is firing in, as a token.
///
/// # Safety
/// `flinfo` is the check function's own, valid for the call; its `fn_extra` is ours.
pub unsafe fn batch_of(flinfo: *mut pg_sys::FmgrInfo) -> usize {
    // SAFETY: fn_extra belongs to this call site. The token is a reset callback allocated in
    // fn_mcxt, which lives as long as the FmgrInfo: when that memory goes, the callback
    // forgets the batch (it touches only this module's state, so it may run during abort).
    unsafe {
        if !(*flinfo).fn_extra.is_null() {
            return (*flinfo).fn_extra as usize;
        }
        register_callback();
        let callback = pg_sys::MemoryContextAlloc(
            (*flinfo).fn_mcxt,
            size_of::<pg_sys::MemoryContextCallback>(),
        ) as *mut pg_sys::MemoryContextCallback;
        callback.write(pg_sys::MemoryContextCallback {
            func: Some(forget_batch),
            arg: callback.cast(),
            next: std::ptr::null_mut(),
        });
        pg_sys::MemoryContextRegisterResetCallback((*flinfo).fn_mcxt, callback);
        (*flinfo).fn_extra = callback.cast();
        let token = callback as usize;
        forget(token);
        token
    }
}

/// The memory of a batch's token is going: so is the batch.
#[pg_guard]
unsafe extern "C-unwind" fn forget_batch(token: *mut std::ffi::c_void) {
    forget(token as usize);
}

/// Drop what is kept under `token` (a batch that ended, or one whose token's address a new
/// batch now has).
fn forget(token: usize) {
    BATCHES.with_borrow_mut(|batches| {
        if let Some(gone) = batches.by_token.remove(&token) {
            batches.bytes -= gone.bytes();
        }
    });
}

/// Has this batch already found `key` in the parent, with nothing written by this
/// transaction since?
pub fn already_found(batch: usize, key: &KeyBytes) -> bool {
    // (A batch's first event, the only one of a single-row transaction, has found nothing yet:
    // no command counter to advance.)
    if BATCHES.with_borrow(|batches| !batches.by_token.contains_key(&batch)) {
        return false;
    }
    let now = now();
    BATCHES.with_borrow(|batches| {
        batches
            .by_token
            .get(&batch)
            .is_some_and(|found| found.found_at == now && found.keys.contains(key))
    })
}

/// This transaction's current command and subtransaction; a new command if the current one
/// wrote something.
fn now() -> (pg_sys::CommandId, pg_sys::SubTransactionId) {
    // SAFETY: called inside a transaction, between the events of an after-trigger batch, where
    // SPI would advance the command counter the same way before running a statement.
    unsafe {
        pg_sys::CommandCounterIncrement();
        (
            pg_sys::GetCurrentCommandId(false),
            pg_sys::GetCurrentSubTransactionId(),
        )
    }
}

/// This batch found `key` in the parent: remember it, if it fits.
pub fn found(batch: usize, key: KeyBytes) {
    // (Asked before borrowing: advancing the command counter may raise an error.)
    let now = now();
    let budget = CHECK_DEDUP_MEMORY.get() as usize * 1024;
    BATCHES.with_borrow_mut(|batches| {
        let total = batches.bytes;
        let found = batches.by_token.entry(batch).or_default();
        let others = total - found.bytes();
        if found.found_at != now {
            // Written since: what was found before no longer counts.
            found.keys.clear();
            found.key_heap_bytes = 0;
            found.found_at = now;
        }
        let heap_bytes = key.heap_bytes();
        if others + found.bytes_with_one_more(heap_bytes) <= budget {
            found.keys.insert(key);
            found.key_heap_bytes += heap_bytes;
        }
        batches.bytes = others + found.bytes();
    })
}

/// Once per backend (a Cell read on the hot path, not the hub's list).
fn register_callback() {
    if CALLBACK_REGISTERED.get() {
        return;
    }
    transaction::on_transaction_end(|_| {
        BATCHES.with_borrow_mut(|batches| *batches = Batches::default())
    });
    CALLBACK_REGISTERED.set(true);
}
