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
//! without waiting, and when another session holds one in a conflicting mode (TRUNCATE, ALTER
//! TABLE, CREATE INDEX, LOCK TABLE), or waits for one, the batch gives way. It is rolled back,
//! the parent's queue rows wait a little (src/purge/backoff.rs), and the run log says which
//! table it gave way on. The application's command then takes its locks. softfk_purge() is the
//! caller's own statement: it waits for its locks, in the same order.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::Mode;
use crate::catalog::reference::Reference;
use crate::catalog::table::{self, partition_tree, referencing_tables, Leaf};
use crate::postgres::error::error;

/// Lock the tables `references` (all of one parent) purge and read, or give way: an error
/// with SQLSTATE 55P03 naming the first table another session holds.
pub fn lock_tables(mode: Mode, references: &[&Reference]) {
    let Some(first) = references.first() else {
        return;
    };
    let mut written: Vec<Leaf> = Vec::new();
    for reference in references {
        if reference.child_partitioned {
            written.extend(partition_tree(reference.child_oid));
        } else {
            written.push(Leaf {
                oid: reference.child_oid,
                qualified_name: reference.child_table.clone(),
            });
        }
    }
    for table in &written {
        take(mode, table, pg_sys::RowExclusiveLock);
    }
    let children: Vec<pg_sys::Oid> = written.iter().map(|table| table.oid).collect();
    for (table, written) in referencing_tables(&children) {
        let lock = if written {
            pg_sys::RowExclusiveLock
        } else {
            pg_sys::RowShareLock
        };
        for table in partition_tree(table.oid) {
            take(mode, &table, lock);
        }
    }
    let parent = if first.parent_partitioned {
        partition_tree(first.parent_oid)
    } else {
        vec![Leaf {
            oid: first.parent_oid,
            qualified_name: first.parent_table.clone(),
        }]
    };
    for table in &parent {
        take(mode, table, pg_sys::AccessShareLock);
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
