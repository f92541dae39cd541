//! A batch's table locks, all taken before it reads a row: every table of every child it
//! purges, partitions at every level included (ROW EXCLUSIVE, what its DELETE or UPDATE
//! takes); every table a native foreign key makes that DELETE read or write (ROW SHARE for
//! core's NO ACTION check, ROW EXCLUSIVE for a cascade, and so on down); then the parent and
//! its partitions (ACCESS SHARE, what the parent check takes).
//!
//! Why up front: a batch purges the children of one parent, ~170 of them for Open edX's
//! `auth_user`, in one transaction. Locked as its statements came, they were locked in the
//! registry's order, each while the earlier ones were held; an application that locks some of
//! the same tables in another order deadlocked with it. Django's test runner does at the end
//! of every TransactionTestCase: one TRUNCATE of every table. The deadlock detector then
//! cancels whichever session checks first, often the application's.
//!
//! So the worker never waits for one of these locks while it holds another: it asks for each
//! without waiting. When another session holds one of a child's tables in a conflicting mode
//! (TRUNCATE, ALTER TABLE, CREATE INDEX, LOCK TABLE), or waits for one, that reference gives
//! way: its keys go to a queue row of their own, which waits a little
//! (src/purge/backoff.rs), and the other children are purged. When none is free, or the
//! parent is held, the whole batch gives way (rolled back). The run log names the table. The
//! application's command then takes its locks. softfk_purge() is the caller's own statement:
//! it waits for its locks, in the same order.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::Mode;
use crate::catalog::reference::Reference;
use crate::catalog::table::{self, partition_tree, referencing_tables, Leaf, Referencing};
use crate::postgres::error::error;

/// A reference whose tables another session holds: it gives way, the others go on.
pub struct GaveWay {
    pub reference: i64,
    /// The first of its tables found locked.
    pub table: String,
}

/// Lock the tables `references` (all of one parent) purge and read. Returns the references
/// that give way, whose tables another session holds; when all do, or the parent is held,
/// the whole batch gives way: an error with SQLSTATE 55P03 naming the table.
pub fn lock_tables(mode: Mode, references: &[&Reference]) -> Vec<GaveWay> {
    let Some(first) = references.first() else {
        return Vec::new();
    };
    let children: Vec<Vec<Leaf>> = references
        .iter()
        .map(|r| tree(r.child_oid, &r.child_table, r.child_partitioned))
        .collect();
    let all: Vec<pg_sys::Oid> = children.iter().flatten().map(|t| t.oid).collect();
    let referencing = referencing_tables(&all);
    let mut gave_way = Vec::new();
    for (reference, child) in references.iter().zip(&children) {
        if let Err(table) = lock_child(mode, child, &referencing) {
            gave_way.push(GaveWay {
                reference: reference.id,
                table,
            });
        }
    }
    if gave_way.len() == references.len() {
        give_way(&gave_way[0].table);
    }
    let parent = tree(
        first.parent_oid,
        &first.parent_table,
        first.parent_partitioned,
    );
    for table in &parent {
        if !take(mode, table, pg_sys::AccessShareLock) {
            give_way(&table.qualified_name);
        }
    }
    gave_way
}

/// What a reference's DELETE or UPDATE of its child takes: every table of the child's
/// partition tree (`child`), and every table a native foreign key to one of them makes that
/// statement read or write. Err: the first one another session holds; the locks this call
/// took are then released (no row was read under them), so that the other session's next
/// request does not wait for the rest of the batch.
fn lock_child(mode: Mode, child: &[Leaf], referencing: &[Referencing]) -> Result<(), String> {
    let pointing_at_child = referencing
        .iter()
        .filter(|r| child.iter().any(|table| table.oid == r.referenced))
        .flat_map(|found| {
            let lock = if found.written {
                pg_sys::RowExclusiveLock
            } else {
                pg_sys::RowShareLock
            };
            tree(
                found.table.oid,
                &found.table.qualified_name,
                found.partitioned,
            )
            .into_iter()
            .map(move |table| (table, lock))
        });
    let wanted = child
        .iter()
        .cloned()
        .map(|table| (table, pg_sys::RowExclusiveLock))
        .chain(pointing_at_child);
    let mut taken: Vec<(pg_sys::Oid, u32)> = Vec::new();
    for (table, lock) in wanted {
        if !take(mode, &table, lock) {
            for (oid, lock) in taken.into_iter().rev() {
                table::unlock(oid, lock);
            }
            return Err(table.qualified_name);
        }
        taken.push((table.oid, lock));
    }
    Ok(())
}

/// A table's partition tree, without reading the catalogs for one that is not partitioned.
fn tree(oid: pg_sys::Oid, qualified_name: &str, partitioned: bool) -> Vec<Leaf> {
    if partitioned {
        return partition_tree(oid);
    }
    vec![Leaf {
        oid,
        qualified_name: qualified_name.to_string(),
    }]
}

/// The message of a batch or a reference that gave way on `table`.
pub fn gave_way_message(table: &str) -> String {
    format!("the purge gave way to another session's lock on table {table}")
}

/// The whole batch gives way: rolled back, its parent's queue rows wait (run()).
pub fn give_way(table: &str) -> ! {
    GAVE_WAY.set(true);
    error(
        PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
        gave_way_message(table),
    )
    .detail("The batch is rolled back; a later run tries its keys again.")
    .raise()
}

/// Take `lock` on `table`: the worker only if no one holds or awaits a conflicting one,
/// softfk_purge() waiting for it.
fn take(mode: Mode, table: &Leaf, lock: u32) -> bool {
    match mode {
        Mode::Function => {
            table::lock(table.oid, lock);
            true
        }
        Mode::Worker => table::try_lock(table.oid, lock),
    }
}

thread_local! {
    /// Whether the batch in progress gave way (run(): not a failure of its keys).
    pub static GAVE_WAY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
