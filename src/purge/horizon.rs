//! The race window's end: which transactions may still commit an orphan of a deletion.
//! A queue row's final pass waits until every transaction running at its first pass has
//! ended; transaction ids are only meaningful in the cluster that assigned them.

use pgrx::prelude::*;

/// `(next, horizon)`: the next transaction id to be assigned, and the oldest transaction id
/// still running other than this transaction's own (`next` when there is none). Every other
/// transaction below `horizon` has ended.
///
/// Read from a fresh snapshot: ids in its list are running; so is every id from its xmax
/// (one past the latest completed id) up to `next` (read after it), since none of those has
/// completed.
pub fn horizon() -> (u64, u64) {
    // SAFETY: GetLatestSnapshot returns a snapshot valid until the next snapshot is taken; it
    // is read here, before anything else runs, and its xip array holds xcnt ids.
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

/// SQL: softfk.system_identifier() RETURNS bigint — the default of softfk.deletion.xid_cluster.
#[pg_extern(sql = false)]
fn system_identifier() -> i64 {
    this_cluster()
}

/// This cluster's system identifier, as softfk.deletion.xid_cluster stores it (bigint).
pub fn this_cluster() -> i64 {
    // SAFETY: reads a value the control file gave at startup.
    unsafe { pg_sys::GetSystemIdentifier() as i64 }
}
