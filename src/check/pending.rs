//! Pending checks: the keys of this transaction whose check event is queued and not yet run.
//!
//! Core queues one after-trigger event per child row. A bulk load of a million enrollments
//! over a hundred thousand users would run a million parent probes for a hundred thousand
//! distinct keys. The triggers' WHEN clause asks [`needs_check`] first: the first row with a
//! key queues an event and records the key here; later rows with the same key, while that
//! event is still queued, only count themselves as its *dependents* and queue nothing. When
//! the event runs, [`take`] removes the key, so rows written after that queue a fresh check.
//!
//! Why this is safe:
//! - A key is in the set only while an event that will check it is queued. The after-trigger
//!   queue drops the events of an aborted subtransaction, so the subtransaction-abort callback
//!   drops the keys recorded inside it; a stale entry would let a later row skip its check.
//! - An event whose own row was deleted or updated by the time it runs is skipped by core's
//!   rule, but if other rows depended on it, the key is checked anyway (src/check/mod.rs).
//! - Keys are compared by their bytes. Two equal bytes strings of one type are always equal
//!   values; two equal values with different bytes (numeric 1.0 and 1.00) merely queue two
//!   checks.
//!
//! Memory: the set may use `pg_softfk.check_dedup_memory` (default 16MB), and beyond that as
//! many bytes as the events it spared would have taken (an event is [`EVENT_BYTES`]),
//! counting its hash table exactly (and the old table too while it doubles). So the set plus
//! the events queued never take more than that setting over what one event per row would.
//! When the set may not grow, new keys simply queue their own events. It is emptied at the
//! end of the transaction.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pgrx::pg_sys;

use crate::postgres::transaction;
use crate::settings::CHECK_DEDUP_MEMORY;

/// What a spared row saves: one after-trigger event (core's AfterTriggerEventDataOneCtid).
const EVENT_BYTES: usize = 12;

/// A key as stored bytes: by-value types as their datum word, others as their contents.
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

#[derive(PartialEq, Eq, Hash)]
struct PendingKey {
    reference: i64,
    key: KeyBytes,
}

struct Entry {
    /// Rows that queued no event because this key's check was already queued.
    dependents: u32,
    /// The subtransaction that recorded the key; it goes if that one aborts.
    recorded_in: pg_sys::SubTransactionId,
}

#[derive(Default)]
struct Pending {
    entries: HashMap<PendingKey, Entry>,
    rows_spared: usize,
    /// Sum of the keys' heap_bytes().
    key_heap_bytes: usize,
}

impl Pending {
    /// Whether one more key of `new_heap_bytes` fits the budget: check_dedup_memory plus the
    /// events the set has spared so far.
    fn may_record(&self, new_heap_bytes: usize) -> bool {
        let budget = CHECK_DEDUP_MEMORY.get() as usize * 1024 + self.rows_spared * EVENT_BYTES;
        let capacity = self.entries.capacity();
        let table = if self.entries.len() < capacity {
            table_bytes(capacity)
        } else {
            // Inserting doubles the table; both exist while it is copied.
            table_bytes(capacity) + table_bytes((capacity.max(3) + 1) * 2)
        };
        table + self.key_heap_bytes + new_heap_bytes <= budget
    }
}

/// The bytes of a hash table with room for `capacity` entries: hashbrown keeps at least 8/7
/// as many buckets, a power of two, each an entry plus one control byte.
fn table_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).max(capacity + 1).next_power_of_two();
    buckets * (size_of::<(PendingKey, Entry)>() + 1)
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
    static CALLBACKS_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Does this row need a check event of its own? (No when one for the same key is queued.)
pub fn needs_check(reference: i64, key: KeyBytes) -> bool {
    register_callbacks();
    PENDING.with_borrow_mut(|pending| {
        let key = PendingKey { reference, key };
        if let Some(entry) = pending.entries.get_mut(&key) {
            entry.dependents = entry.dependents.saturating_add(1);
            pending.rows_spared += 1;
            return false;
        }
        let heap_bytes = key.key.heap_bytes();
        if pending.may_record(heap_bytes) {
            // SAFETY: reads the current subtransaction's id; called inside a transaction.
            let recorded_in = unsafe { pg_sys::GetCurrentSubTransactionId() };
            pending.entries.insert(
                key,
                Entry {
                    dependents: 0,
                    recorded_in,
                },
            );
            pending.key_heap_bytes += heap_bytes;
        }
        true
    })
}

/// The check of `key` is running now: forget the key, and say how many rows relied on it.
pub fn take(reference: i64, key: KeyBytes) -> u32 {
    PENDING.with_borrow_mut(|pending| {
        let heap_bytes = key.heap_bytes();
        let entry = pending.entries.remove(&PendingKey { reference, key });
        if entry.is_some() {
            pending.key_heap_bytes -= heap_bytes;
        }
        entry.map_or(0, |entry| entry.dependents)
    })
}

/// Once per backend (a Cell read on the hot path, not the hub's list).
fn register_callbacks() {
    if CALLBACKS_REGISTERED.get() {
        return;
    }
    transaction::on_transaction_end(|_| {
        PENDING.with_borrow_mut(|pending| *pending = Pending::default())
    });
    transaction::on_subtransaction_abort(forget_recorded_since);
    // (Only now: if registering failed, keys must not be recorded where nothing clears them.)
    CALLBACKS_REGISTERED.set(true);
}

/// A subtransaction aborted: its queued events are gone, and so must its keys be.
fn forget_recorded_since(aborted: pg_sys::SubTransactionId) {
    // Subtransaction ids grow within a transaction: the aborted one and every one started
    // inside it have ids >= its own.
    PENDING.with_borrow_mut(|pending| {
        pending
            .entries
            .retain(|_, entry| entry.recorded_in < aborted);
        pending.key_heap_bytes = pending.entries.keys().map(|k| k.key.heap_bytes()).sum();
    });
}
