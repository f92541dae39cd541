//! The queue `softfk.deletion`: taking its ready rows as batches (merging small rows of the
//! same parent column), handing a failing reference's keys over to rows of their own,
//! marking keys done, and queueing sweeps.

use std::collections::{BTreeMap, BTreeSet};

use pgrx::prelude::*;

use super::horizon::{horizon, this_cluster};
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::{read_one, Columns};
use crate::settings::{KEYS_PER_BATCH, SCAN_THRESHOLD};

/// One queue row as a batch takes it, with the small rows merged into its batch.
pub struct Entry {
    pub id: i64,
    /// Other queue rows of the same parent column in the same pass, whose keys this batch
    /// also purges, all of them: one user deleted per statement makes one-key rows, and a
    /// transaction per key would cap the purge at a few hundred keys a second.
    /// (row id, how many keys it brought), in the order its keys follow the entry's own.
    pub merged: Vec<(i64, usize)>,
    pub parent: pg_sys::Oid,
    pub parent_column: String,
    /// This batch's keys; None means every key.
    pub keys: Option<Vec<String>>,
    /// The one reference this row is for (a reference's keys handed over after it failed in
    /// a batch with others); None: every reference of the parent column.
    pub reference: Option<i64>,
    /// Whether this batch's final pass locks every row before judging it (run()).
    pub locking_first: bool,
    /// Whether this batch starts the current pass (no key of it done yet).
    pub starts_pass: bool,
    /// Keys of `id` done in the current pass after this batch.
    pub done_after: i32,
    pub total_keys: i32,
    pub final_pass: bool,
    /// A first pass that reads each child in physical order (src/purge/scan.rs): where it
    /// goes on. Its batches take every key of the row.
    pub scan: Option<ScanPosition>,
}

/// Where a first pass that reads each child in physical order goes on: the next block of one
/// leaf of one reference. References are read in id order, a reference's leaves in oid order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ScanPosition {
    pub reference: i64,
    pub table: pg_sys::Oid,
    pub block: i64,
}

impl ScanPosition {
    /// Before the first leaf of the first reference.
    pub const START: ScanPosition = ScanPosition {
        reference: 0,
        table: pg_sys::InvalidOid,
        block: 0,
    };
}

/// The most keys one physical-order pass takes: the statements hash them all, once each.
/// A larger backlog makes several such passes.
pub const SCAN_KEYS_AT_MOST: usize = 250_000;

/// The queue rows for the same references as `entry` (its parent column's, or its one
/// reference's), `entry` included: the rows a batch that gave way stands for.
pub fn rows_like(entry: i64) -> Vec<i64> {
    let mut rows = read_one::<Vec<i64>>(
        "SELECT pg_catalog.array_agg(d.id)
           FROM softfk.deletion d JOIN softfk.deletion e
             ON e.parent_table = d.parent_table AND e.parent_column = d.parent_column
            AND e.reference_id IS NOT DISTINCT FROM d.reference_id
          WHERE e.id = $1",
        &[entry.into()],
    )
    .unwrap_or_default();
    if !rows.contains(&entry) {
        rows.push(entry);
    }
    rows
}

/// One reference of a batch failed: its keys of this batch become queue rows of their own,
/// for that reference alone, in the pass the entry's rows are in (a first pass whose batch
/// found nothing else running gets a first pass again; a final pass waits for the same
/// transactions), while the entry goes on for the other references. A
/// merged batch gives each row it merged a row of its own, so that one bad key waits alone.
/// Returns the new rows' ids.
pub fn hand_over(entry: &Entry, reference: i64) -> Vec<i64> {
    keys_by_row(entry)
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

/// The batch's keys by the queue row they came from: the entry's own, then each merged
/// row's (None: every key).
fn keys_by_row(entry: &Entry) -> Vec<(i64, Option<Vec<String>>)> {
    let Some(keys) = &entry.keys else {
        return vec![(entry.id, None)];
    };
    let own = keys.len() - entry.merged.iter().map(|(_, n)| n).sum::<usize>();
    let mut rest = keys[own..].iter().cloned();
    let mut slices = vec![(entry.id, Some(keys[..own].to_vec()))];
    for (id, n) in &entry.merged {
        slices.push((*id, Some(rest.by_ref().take(*n).collect())));
    }
    slices
}

/// Some keys of a keyed batch hold more rows than its statements purged: they move to new
/// queue rows (one per row they came from, keeping its cause and time), behind every row
/// queued so far, in the pass the batch is in. They leave the rows they came from, which
/// therefore never purge them again, in this pass or the next. A final pass's new row is
/// ready at once, as the batch's own pass was (`next`: the horizon of a first pass found to
/// be final, run()). Returns how many keys left the entry's own row.
pub fn split_off(entry: &Entry, keys: &BTreeSet<String>, next: u64) -> i32 {
    let own_done_before = entry.done_after
        - (entry.keys.as_ref().map_or(0, Vec::len)
            - entry.merged.iter().map(|(_, n)| n).sum::<usize>()) as i32;
    let mut moved_from_own = 0;
    for (source, row_keys) in keys_by_row(entry) {
        let moving: Vec<String> = row_keys
            .unwrap_or_default()
            .into_iter()
            .filter(|key| keys.contains(key))
            .collect();
        if moving.is_empty() {
            continue;
        }
        // (Merged rows are whole: none of their keys was done before this batch.)
        let done_before = if source == entry.id {
            own_done_before
        } else {
            0
        };
        if source == entry.id {
            moved_from_own = moving.len() as i32;
        }
        Spi::run_with_args(
            "INSERT INTO softfk.deletion (parent_table, parent_column, keys, cause, deleted_by,
                                          deleted_at, final_pass, final_after, xid_cluster,
                                          reference_id)
             SELECT d.parent_table, d.parent_column, $2, d.cause, d.deleted_by, d.deleted_at,
                    $3, CASE WHEN $3 THEN CASE WHEN d.final_pass AND d.xid_cluster = $5
                                               THEN d.final_after ELSE $4::text::xid8 END END,
                    $5, d.reference_id
               FROM softfk.deletion d WHERE d.id = $1",
            &[
                source.into(),
                moving.clone().into(),
                entry.final_pass.into(),
                (next as i64).to_string().into(),
                this_cluster().into(),
            ],
        )
        .expect("queueing the keys a batch left unfinished");
        // Only from this batch's slice of the row: a key done before it stays.
        Spi::run_with_args(
            "UPDATE softfk.deletion
                SET keys = ARRAY(SELECT k FROM unnest(keys) WITH ORDINALITY AS u (k, i)
                                  WHERE i <= $2 OR k <> ALL ($3) ORDER BY i)
              WHERE id = $1",
            &[source.into(), done_before.into(), moving.into()],
        )
        .expect("taking the unfinished keys out of their queue row");
        // A row left with no key has nothing to wait for.
        Spi::run_with_args(
            "DELETE FROM softfk.deletion WHERE id = $1 AND keys = '{}'",
            &[source.into()],
        )
        .expect("removing an emptied queue row");
    }
    moved_from_own
}

/// Whether a queue row other than `waiting` ones is ready (see [`take_entry`]).
pub fn work_is_ready(waiting: &[i64]) -> bool {
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
/// was running at its first pass has ended (`$1`: the horizon). Rows whose first pass ran in
/// another cluster have been made ready by [`adopt_rows_of_other_clusters`]. Two partial
/// indexes serve exactly these two halves (sql/purge.sql), so that rows waiting for their
/// final pass cost nothing to the search for a ready one.
fn ready() -> &'static str {
    "(NOT d.final_pass OR (d.final_pass AND d.final_after <= $1::text::xid8))"
}

/// Rows restored from a dump of another cluster, through their first pass there, are ready
/// for their final pass at once: every transaction of that cluster has ended. Run at the start
/// of each run (one scan of the queue, not one per batch). Looked for first, read-only: an
/// UPDATE run through SPI takes a transaction id even when it changes nothing, and an idle
/// worker must not consume one at every naptime.
pub fn adopt_rows_of_other_clusters() {
    as_extension_owner(|| {
        let cluster = this_cluster();
        let found = read_one::<bool>(
            "SELECT EXISTS (SELECT FROM softfk.deletion WHERE final_pass AND xid_cluster <> $1)",
            &[cluster.into()],
        )
        .unwrap_or(false);
        if found {
            Spi::run_with_args(
                "UPDATE softfk.deletion SET final_after = '0'::xid8, xid_cluster = $1
                  WHERE final_pass AND xid_cluster <> $1",
                &[cluster.into()],
            )
            .expect("updating softfk.deletion");
        }
    });
}

/// Lock and read the oldest queue row that is ready: not yet through its first pass, or
/// through it and past its horizon. Rows of this very transaction wait for it to commit, and
/// rows another run holds are skipped. A large backlog's first pass starts in physical order
/// only when `may_scan`.
pub fn take_entry(
    horizon: u64,
    failed_entries: &[i64],
    keys_for_entry: &BTreeMap<i64, i32>,
    may_scan: bool,
) -> Option<Entry> {
    let default_keys = KEYS_PER_BATCH.get();
    // (connect_mut / update: FOR UPDATE needs a read-write SPI call.)
    Spi::connect_mut(|client| {
        let found = client
            .update(
                &format!(
                    "SELECT d.id, d.parent_table::oid AS parent, d.parent_column::text,
                            d.keys IS NULL AS every_key, cardinality(d.keys) AS total_keys,
                            d.keys_done, d.final_pass, d.reference_id,
                            d.scan_reference, d.scan_table::oid AS scan_table, d.scan_block
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
        let id: i64 = found.column("id").unwrap();
        let every_key: bool = found.column("every_key").unwrap();
        let total_keys: i32 = found.column("total_keys").unwrap_or(0);
        let keys_done: i32 = found.column("keys_done").unwrap();
        let scan = found
            .column::<i64>("scan_reference")
            .map(|reference| ScanPosition {
                reference,
                table: found.column("scan_table").unwrap_or(pg_sys::InvalidOid),
                block: found.column("scan_block").unwrap_or(0),
            });
        let final_pass: bool = found.column("final_pass").unwrap();
        let reference: Option<i64> = found.column("reference_id");
        // A backlog of at least pg_softfk.scan_threshold keys in this pass takes it reading each
        // child in physical order: the row takes the keys of the later rows (up to
        // SCAN_KEYS_AT_MOST), and they leave the queue. Only from the start of a first pass,
        // for every reference, and not for a row retried with fewer keys.
        let threshold = SCAN_THRESHOLD.get();
        let scan_threshold = (scan.is_none()
            && may_scan
            && threshold > 0
            && keys_done == 0
            && !every_key
            && !final_pass
            && reference.is_none()
            && !keys_for_entry.contains_key(&id))
        .then_some(threshold as usize);
        let batch_keys = *keys_for_entry.get(&id).unwrap_or(&default_keys);
        // A pass in physical order (or one that may start) reads every key of its row.
        let take = if scan.is_some() || scan_threshold.is_some() {
            total_keys
        } else {
            batch_keys
        };
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
        let mut entry = Entry {
            id,
            merged: Vec::new(),
            starts_pass: keys_done == 0,
            parent: found.column("parent").unwrap(),
            parent_column: found.column("parent_column").unwrap(),
            keys,
            done_after: 0,
            total_keys,
            final_pass,
            reference,
            locking_first: false,
            scan,
        };
        // Later whole rows of the same parent column, pass and reference (all of them, or
        // the one a row was handed over to) are merged into a batch that takes its own row
        // whole at the start of the pass.
        let whole_row_at_pass_start = scan.is_none()
            && keys_done == 0
            && entry
                .keys
                .as_ref()
                .is_some_and(|keys| keys.len() as i32 == total_keys && total_keys <= batch_keys);
        if !whole_row_at_pass_start && scan_threshold.is_none() {
            entry.done_after = keys_done + entry.keys.as_ref().map_or(0, |k| k.len() as i32);
            return Some(entry);
        }
        let own = entry.keys.as_ref().map_or(0, Vec::len);
        let room = if whole_row_at_pass_start {
            (batch_keys as usize).saturating_sub(own)
        } else {
            0
        };
        let (rows, more, scan) = take_merged(
            client,
            &entry,
            horizon,
            failed_entries,
            keys_for_entry,
            (own, room),
            scan_threshold,
        );
        let keys = entry.keys.as_mut().expect("a keyed entry");
        keys.extend(more);
        if scan {
            let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
            start_scan(client, id, keys, &ids);
            entry.total_keys = keys.len() as i32;
            entry.done_after = entry.total_keys;
            entry.scan = Some(ScanPosition::START);
        } else {
            // Key by key: the batch's share of its own row, then the rows merged into it.
            let own_share = own.min(batch_keys as usize);
            keys.drain(own_share..own);
            entry.done_after = keys_done + own_share as i32;
            entry.merged = rows;
        }
        Some(entry)
    })
}

/// The row `id` takes the keys of the rows `merged` (already in `keys`, after its own) for a
/// physical-order pass, which starts before the first leaf; the merged rows leave the queue.
/// (The row keeps its own time, cause and deleting transaction: it is the oldest of them.)
fn start_scan(client: &mut pgrx::spi::SpiClient<'_>, id: i64, keys: &[String], merged: &[i64]) {
    client
        .update(
            "UPDATE softfk.deletion
                SET keys = $2, scan_reference = 0, scan_table = 0::pg_catalog.oid, scan_block = 0
              WHERE id = $1",
            None,
            &[id.into(), keys.to_vec().into()],
        )
        .expect("starting a physical-order pass");
    client
        .update(
            "DELETE FROM softfk.deletion WHERE id = ANY ($1)",
            None,
            &[merged.to_vec().into()],
        )
        .expect("removing the rows a physical-order pass took");
}

/// A physical-order pass goes on at `position` in its next batch.
pub fn save_scan_position(id: i64, position: ScanPosition) {
    Spi::run_with_args(
        "UPDATE softfk.deletion SET scan_reference = $2, scan_table = $3::pg_catalog.oid, scan_block = $4
          WHERE id = $1",
        &[
            id.into(),
            position.reference.into(),
            position.table.into(),
            position.block.into(),
        ],
    )
    .expect("recording where a physical-order pass goes on");
}

/// A physical-order pass that failed goes on key by key, from its first key: the key-by-key
/// pass isolates a failing reference and hands its keys over (src/purge/batch.rs).
pub fn stop_scan(id: i64) {
    Spi::run_with_args(
        "UPDATE softfk.deletion SET scan_reference = NULL, scan_table = NULL, scan_block = NULL
          WHERE id = $1",
        &[id.into()],
    )
    .expect("ending a physical-order pass");
}

/// Whole queue rows to purge along with `entry` (a whole row itself, at the start of its
/// pass): later rows of the same parent column, in the same pass and ready, oldest first, as
/// long as their keys fit in `room`; or, when `scan_threshold` is given and they hold enough
/// keys to reach it with the entry's own `own`, as many as fit in [`SCAN_KEYS_AT_MOST`], for
/// a physical-order pass. Rows another run holds are skipped. Returns the rows taken (id, how
/// many keys), their keys in that order, and whether they make a physical-order pass.
fn take_merged(
    client: &mut pgrx::spi::SpiClient<'_>,
    entry: &Entry,
    horizon: u64,
    failed_entries: &[i64],
    keys_for_entry: &BTreeMap<i64, i32>,
    (own, room): (usize, usize),
    scan_threshold: Option<usize>,
) -> (Vec<(i64, usize)>, Vec<String>, bool) {
    // Rows that failed, or are being retried with fewer keys, are not merged: they are taken
    // on their own, so a bad key stays with its own row.
    let excluded: Vec<i64> = failed_entries
        .iter()
        .copied()
        .chain(keys_for_entry.keys().copied())
        .collect();
    let look_for = match scan_threshold {
        Some(_) => SCAN_KEYS_AT_MOST.saturating_sub(own).max(room),
        None => room,
    };
    if look_for == 0 {
        return (
            Vec::new(),
            Vec::new(),
            scan_threshold.is_some_and(|t| own >= t),
        );
    }
    let candidates: Vec<(i64, usize)> = client
        .select(
            &format!(
                "SELECT d.id, cardinality(d.keys)
                   FROM softfk.deletion d
                  WHERE {ready}
                    AND d.parent_table::oid = $2 AND d.parent_column = $3 AND d.final_pass = $4
                    AND d.keys IS NOT NULL AND d.keys_done = 0 AND d.id > $5
                    AND d.reference_id IS NOT DISTINCT FROM $8
                    AND d.scan_reference IS NULL
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
                (look_for as i64).into(),
                entry.reference.into(),
            ],
        )
        .expect("reading softfk.deletion")
        .map(|row| {
            let keys: i32 = row.get(2).unwrap().unwrap_or(0);
            (row.get(1).unwrap().unwrap(), keys as usize)
        })
        .collect();
    // The longest run of rows, oldest first, whose keys fit in `limit`.
    let fitting = |limit: usize| {
        let mut keys = 0;
        candidates
            .iter()
            .take_while(|(_, n)| {
                keys += n;
                keys <= limit
            })
            .count()
    };
    let for_scan = fitting(SCAN_KEYS_AT_MOST.saturating_sub(own));
    let scan = scan_threshold.is_some_and(|threshold| {
        own + candidates[..for_scan].iter().map(|(_, n)| n).sum::<usize>() >= threshold
    });
    let taken: Vec<i64> = candidates[..if scan { for_scan } else { fitting(room) }]
        .iter()
        .map(|(id, _)| *id)
        .collect();
    if taken.is_empty() {
        return (Vec::new(), Vec::new(), scan);
    }
    let mut ids = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for row in client
        .update(
            "SELECT d.id, d.keys FROM softfk.deletion d WHERE d.id = ANY ($1) ORDER BY d.id
                FOR UPDATE SKIP LOCKED",
            None,
            &[taken.into()],
        )
        .expect("reading softfk.deletion")
    {
        let row_keys = row.get::<Vec<String>>(2).unwrap().unwrap_or_default();
        ids.push((row.get::<i64>(1).unwrap().unwrap(), row_keys.len()));
        keys.extend(row_keys);
    }
    (ids, keys, scan)
}

/// A batch is done: its rows' pass is recorded, or, after the final pass of all their keys,
/// the rows leave the queue. `next` is the next transaction id when the batch began, the
/// horizon its final pass waits for.
pub fn finish_batch(entry: &Entry, pass_complete: bool, next: u64) {
    // The merged rows were taken whole, with the entry's pass: they end it with the entry.
    let ids: Vec<i64> = std::iter::once(entry.id)
        .chain(entry.merged.iter().map(|(id, _)| *id))
        .collect();
    if pass_complete && entry.final_pass {
        Spi::run_with_args(
            "DELETE FROM softfk.deletion WHERE id = ANY ($1)",
            &[ids.into()],
        )
    } else {
        Spi::run_with_args(
            "UPDATE softfk.deletion
                SET keys_done = $2, final_pass = $3,
                    -- (A pass in physical order is followed by another, from the start.)
                    scan_reference = CASE WHEN $6 THEN 0 END,
                    scan_table = CASE WHEN $6 THEN 0::pg_catalog.oid END,
                    scan_block = CASE WHEN $6 THEN 0 END,
                    -- (A value from another cluster counts for nothing here.)
                    final_after = CASE WHEN final_after IS NULL OR xid_cluster <> $5
                                       THEN $4::text::xid8 ELSE final_after END,
                    xid_cluster = $5
              WHERE id = ANY ($1)",
            &[
                ids.into(),
                (if pass_complete { 0 } else { entry.done_after }).into(),
                (entry.final_pass || pass_complete).into(),
                (next as i64).to_string().into(),
                this_cluster().into(),
                entry.scan.is_some().into(),
            ],
        )
    }
    .expect("updating softfk.deletion");
}

/// A sweep queues, for every parent column with soft references, a row meaning "every key".
pub fn queue_sweep() {
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
    .expect("queueing a sweep");
}
