//! How long a queue row that keeps failing waits before the worker tries it again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A queue row that fails even with one key is retried by the worker after a delay that
/// doubles with each failure (1 s, 2 s, ... up to [`Backoff::LONGEST`]), while the rest of the
/// queue is purged as usual: one bad row does not slow the worker down. softfk_purge()
/// retries every row at once.
pub struct Backoff;

thread_local! {
    /// Queue row id -> (failures in a row, not before).
    static BACKOFF: RefCell<BTreeMap<i64, (u32, Instant)>> =
        const { RefCell::new(BTreeMap::new()) };
}

impl Backoff {
    const LONGEST: Duration = Duration::from_secs(300);
    const LONGEST_GIVING_WAY: Duration = Duration::from_secs(30);

    /// The rows whose delay has not passed yet.
    pub fn waiting() -> Vec<i64> {
        let now = Instant::now();
        BACKOFF.with_borrow(|rows| {
            rows.iter()
                .filter(|(_, (_, at))| *at > now)
                .map(|(id, _)| *id)
                .collect()
        })
    }

    pub fn failed(entry: i64) {
        let now = Instant::now();
        BACKOFF.with_borrow_mut(|rows| {
            // Rows that left the queue some other way (a dropped registration) are not
            // remembered for ever.
            if rows.len() >= 10_000 {
                rows.retain(|_, (_, at)| *at > now);
            }
            let failures = rows.get(&entry).map_or(0, |(n, _)| *n) + 1;
            let delay = Duration::from_secs(1 << (failures - 1).min(9)).min(Backoff::LONGEST);
            rows.insert(entry, (failures, now + delay));
        });
    }

    /// A row whose batch gave way to another session's table lock (src/purge/table_locks.rs):
    /// the same doubling delay, but never above [`Backoff::LONGEST_GIVING_WAY`], so that the
    /// purge goes on soon after a migration ends.
    pub fn gave_way(entry: i64) {
        Backoff::failed(entry);
        BACKOFF.with_borrow_mut(|rows| {
            if let Some((_, at)) = rows.get_mut(&entry) {
                *at = (*at).min(Instant::now() + Backoff::LONGEST_GIVING_WAY);
            }
        });
    }

    pub fn succeeded(entry: i64) {
        BACKOFF.with_borrow_mut(|rows| rows.remove(&entry));
    }
}
