//! A large backlog's first pass in physical order. When at least `pg_softfk.scan_threshold`
//! keys of one parent column wait for their first pass (a mass retirement), their queue rows
//! become one (src/purge/queue.rs), and each child is read once, in block ranges, against the
//! hashed set of all those keys, as a hand-written `DELETE ... USING` reads it.
//!
//! Why: key by key, each batch changes rows scattered over every page of every child (user ids
//! are spread over the pages), so every checkpoint during a long drain logs nearly every page
//! again, and the drain is bound by its WAL (BENCHMARKS.md, mass retirement). In physical
//! order, a page is dirtied once, by one statement. A statement's range holds about
//! `pg_softfk.rows_per_statement` matching rows (from the keys' share of the child, in its
//! column statistics), or more: it reads at least twice as many rows as there are keys, which
//! it hashes. A batch ends after the statement that reaches `rows_per_statement` rows.
//!
//! The first pass's statements (src/catalog/query.rs, `Reference::range_sql`) skip rows others
//! hold, and ask the parent about the keys found in the range, after their rows are locked.
//! That pass never counts as final, even with nothing else running: a row updated while it
//! runs can move to a page it has already read, and between two statements nothing follows
//! it there. So the final pass, after the horizon, reads each leaf in one statement: under
//! one snapshot a row is seen in one version or the other, and a row lock it waits for
//! follows the row to its new version. It waits for the rows others hold, and finds what the
//! first pass left: rows others held, rows moved, orphans committed in the race window. Its
//! statements change few rows, and a batch ends after each leaf.
//!
//! Where the pass goes on is in the queue row (reference, leaf, next block), written in the
//! transaction of the batch that got there: a crash redoes one batch, never skips one.

use std::collections::BTreeMap;

use pgrx::prelude::*;

use super::batch::{
    account, leaves, statement_timeout, table_owner, Changed, KeyStatistics, StatementSettings,
};
use super::parent_check::ParentCheck;
use super::queue::ScanPosition;
use super::{Rows, Touched};
use crate::catalog::query::{Pass, PurgeSql};
use crate::catalog::reference::Reference;
use crate::postgres::process;
use crate::postgres::roles::{as_extension_owner, as_table_owner};
use crate::settings::ROWS_PER_STATEMENT;

/// A range past every block a leaf can have: `(4294967295,0)` is above every tuple's ctid.
const WHOLE_LEAF: i64 = u32::MAX as i64;

/// Blocks one statement reads at most (64 MB of 8 kB blocks), whatever the estimate: a key set
/// that matches almost nothing in a big child must not make one statement read all of it.
const MOST_BLOCKS_PER_STATEMENT: i64 = 8192;

/// What one batch of a physical-order pass did.
pub struct Scanned {
    /// Per reference id.
    pub rows: BTreeMap<i64, Touched>,
    /// Where the pass goes on; None when it has read every leaf of every reference.
    pub next: Option<ScanPosition>,
}

/// Read from `position` on, in `references` (usable, not 'no action') by id. A first pass
/// goes until a statement brings the batch to `rows_per_statement` rows or every leaf is
/// read; a final pass reads one leaf.
pub fn run(
    keys: &[String],
    position: ScanPosition,
    references: &[&Reference],
    final_pass: bool,
) -> Scanned {
    let limit = i64::from(ROWS_PER_STATEMENT.get());
    let settings = StatementSettings::new();
    let pass = if final_pass { Pass::Final } else { Pass::First };
    let mut references = references.to_vec();
    references.sort_by_key(|reference| reference.id);
    let mut scanned = Scanned {
        rows: BTreeMap::new(),
        next: None,
    };
    let mut changed_in_batch = 0;
    for reference in references
        .into_iter()
        .filter(|reference| reference.id >= position.reference)
    {
        let owner = table_owner(reference.child_oid);
        let _check = ParentCheck::prepare(reference, owner);
        let mut rows = Rows::default();
        let at_position = reference.id == position.reference;
        for leaf in as_extension_owner(|| leaves(reference)) {
            if at_position && leaf.oid.to_u32() < position.table.to_u32() {
                continue;
            }
            let name = &leaf.qualified_name;
            let mut block = if at_position && leaf.oid == position.table {
                position.block
            } else {
                0
            };
            // The final pass reads the whole leaf at once, rows added since included.
            let (blocks, per_statement) = if final_pass {
                (WHOLE_LEAF, WHOLE_LEAF)
            } else {
                let size = as_extension_owner(|| leaf_size(name));
                let per_statement = blocks_per_statement(name, reference, keys.len(), size, limit);
                (size.0, per_statement)
            };
            let sql = reference.range_sql(name, pass);
            while block < blocks {
                let end = (block + per_statement).min(blocks);
                if process::is_background_worker() {
                    let range = if final_pass {
                        "every block".to_string()
                    } else {
                        format!("blocks {block} to {} of {blocks}", end - 1)
                    };
                    process::report_activity(Some(&format!(
                        "pg_softfk purge: {name}({}) -> {}: {range}, {} keys, {} pass in physical order",
                        reference.child_column_quoted,
                        reference.parent_table,
                        keys.len(),
                        if final_pass { "final" } else { "first" },
                    )));
                }
                let changed = as_table_owner(owner, || {
                    settings.apply(|| execute(&sql, reference, keys, block, end))
                });
                account(reference, name, &changed, &mut rows);
                changed_in_batch += changed.count;
                block = end;
                if final_pass || changed_in_batch >= limit {
                    scanned.next = Some(ScanPosition {
                        reference: reference.id,
                        table: leaf.oid,
                        block,
                    });
                    break;
                }
            }
            if scanned.next.is_some() {
                break;
            }
        }
        scanned
            .rows
            .insert(reference.id, Touched::of(reference, rows));
        if scanned.next.is_some() {
            break;
        }
    }
    scanned
}

/// The leaf's size in blocks now, and its rows as last counted (`reltuples`; 0 when never
/// counted). (Rows added after the pass has read past its end are newer than the deletion:
/// orphans of the race window, for the final pass.)
fn leaf_size(leaf: &str) -> (i64, f64) {
    Spi::connect(|client| {
        let row = client
            .select(
                "SELECT pg_catalog.pg_relation_size(c.oid)
                        / pg_catalog.current_setting('block_size')::pg_catalog.int8,
                        GREATEST(c.reltuples, 0)::pg_catalog.float8
                   FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass",
                None,
                &[leaf.into()],
            )
            .expect("reading the leaf's size")
            .first();
        (
            row.get::<i64>(1).unwrap().unwrap_or(0),
            row.get::<f64>(2).unwrap().unwrap_or(0.0),
        )
    })
}

/// Blocks per statement: about `limit` matching rows (the keys' share of the leaf's rows, from
/// its column statistics: rows per key, spread over its blocks), but at least twice as many
/// rows read as there are keys, so that hashing the keys stays a small part of each statement
/// (200,000 keys cost about 60 ms a statement), and at most [`MOST_BLOCKS_PER_STATEMENT`].
fn blocks_per_statement(
    leaf: &str,
    reference: &Reference,
    keys: usize,
    (blocks, rows): (i64, f64),
    limit: i64,
) -> i64 {
    let statistics = as_extension_owner(|| KeyStatistics::read(leaf, &reference.child_column));
    let blocks = blocks.max(1) as f64;
    let matching_per_block = keys as f64 * statistics.rows_per_key / blocks;
    let for_limit = limit as f64 / matching_per_block.max(f64::MIN_POSITIVE);
    let rows_per_block = if rows > 0.0 { rows / blocks } else { 100.0 };
    let for_keys = 2.0 * keys as f64 / rows_per_block.max(1.0);
    for_limit
        .max(for_keys)
        .clamp(1.0, MOST_BLOCKS_PER_STATEMENT as f64) as i64
}

/// One range's statements ([`Reference::range_sql`]): lock the rows of `keys` in blocks
/// `from` to before `to`, then act on those whose key has no parent.
fn execute(sql: &PurgeSql, reference: &Reference, keys: &[String], from: i64, to: i64) -> Changed {
    let PurgeSql::LockThenAct { lock, act } = sql else {
        unreachable!("a range pass locks, then acts")
    };
    Spi::connect_mut(|client| {
        let (locked, found) = {
            let _armed = statement_timeout();
            let row = client
                .update(
                    lock,
                    None,
                    &[
                        keys.to_vec().into(),
                        format!("({from},0)").into(),
                        format!("({to},0)").into(),
                    ],
                )
                .expect("locking the rows of a block range")
                .first();
            (
                row.get::<Vec<String>>(1)
                    .expect("reading the locked rows")
                    .unwrap_or_default(),
                row.get::<Vec<String>>(2)
                    .expect("reading their keys")
                    .unwrap_or_default(),
            )
        };
        let mut changed = Changed::default();
        if !locked.is_empty() {
            let _armed = statement_timeout();
            changed.add(
                reference.on_delete,
                client
                    .update(act, None, &[found.into(), locked.into()])
                    .expect("running a purge statement"),
            );
        }
        changed
    })
}
