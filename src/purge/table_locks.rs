//! A batch's table locks, all taken before it reads a row: every leaf of every child it
//! purges (ROW EXCLUSIVE, what its DELETE or UPDATE takes), then the parent and its leaves
//! (ACCESS SHARE, what the parent check takes).
//!
//! Why up front: a batch purges the children of one parent, ~170 of them for Open edX's
//! `auth_user`, in one transaction. Locked as its statements come, they would be locked in the
//! registry's order, each while the earlier ones are held; an application that locks some of
//! the same tables in another order deadlocks with it. Django's test runner does at the end of
//! every TransactionTestCase: one TRUNCATE of every table. The deadlock detector then cancels
//! whichever session checks first, often the application's.
//!
//! So the worker never waits for a table lock while it holds one: it asks for each without
//! waiting, and when another session holds one in a conflicting mode (TRUNCATE, ALTER TABLE,
//! CREATE INDEX, LOCK TABLE), or waits for one, the batch gives way. It is rolled back, its
//! queue row is left for the next run, and the run log says which table it gave way on. The
//! application's command then takes its locks. softfk_purge() is the caller's own statement:
//! it waits for its locks, in the same order.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::batch::leaves;
use super::Mode;
use crate::catalog::reference::Reference;
use crate::catalog::table::{self, leaf_partitions, Leaf};
use crate::postgres::error::error;

/// Lock the tables `references` (all of one parent) purge and read, or give way: an error
/// with SQLSTATE 55P03 naming the first table another session holds.
pub fn lock_tables(mode: Mode, references: &[&Reference]) {
    let Some(first) = references.first() else {
        return;
    };
    let written = references.iter().flat_map(|reference| leaves(reference));
    for leaf in written {
        take(mode, &leaf, pg_sys::RowExclusiveLock);
    }
    let parent = Leaf {
        oid: first.parent_oid,
        qualified_name: first.parent_table.clone(),
    };
    let read = if first.parent_partitioned {
        leaf_partitions(parent.oid)
    } else {
        Vec::new()
    };
    for table in std::iter::once(parent).chain(read) {
        take(mode, &table, pg_sys::AccessShareLock);
    }
}

fn take(mode: Mode, table: &Leaf, lock: u32) {
    let taken = match mode {
        Mode::Function => {
            table::lock(table.oid, lock);
            true
        }
        Mode::Worker => table::try_lock(table.oid, lock),
    };
    if !taken {
        GAVE_WAY.set(true);
        error(
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            format!(
                "the purge gave way to another session's lock on table {}",
                table.qualified_name
            ),
        )
        .detail("The batch is rolled back; the next run tries its keys again.")
        .raise();
    }
}

thread_local! {
    /// Whether the batch in progress gave way (run(): not a failure of its keys).
    pub static GAVE_WAY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
