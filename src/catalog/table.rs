//! Tables and columns named in an API call, checked the way core checks them for
//! `ALTER TABLE ... ADD FOREIGN KEY`: table kinds, ownership, the REFERENCES privilege, a
//! unique index on the parent key, comparable types. Every check raises an error with a
//! SQLSTATE before anything is written. Also the one walk of a partition tree.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use super::reference::OnDelete;
use crate::postgres::error::error;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::{read_one, Columns};

/// A table named in an API call, as the catalogs describe it now.
pub struct Table {
    pub oid: pg_sys::Oid,
    /// Unqualified name, for messages (core's messages use the bare relation name too).
    pub name: String,
    pub relkind: String,
    pub temporary: bool,
    pub unlogged: bool,
    pub system: bool,
    pub owned_by_caller: bool,
    pub may_reference: bool,
    /// What Citus made of it, when the citus extension is installed in this database.
    pub citus: Option<CitusTable>,
}

/// A table Citus manages (`pg_dist_partition`): its rows live in shards on other nodes (or
/// on this one, under other names), where writes fire the shards' triggers, not this table's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CitusTable {
    /// Rows spread over shards by a distribution column (or one shard, schema-based).
    Distributed,
    /// A full copy on every node.
    Reference,
    /// One shard on the coordinator, for joins and foreign keys with reference tables.
    Local,
}

impl CitusTable {
    fn describe(self) -> &'static str {
        match self {
            CitusTable::Distributed => "a Citus distributed table",
            CitusTable::Reference => "a Citus reference table",
            CitusTable::Local => "a Citus local table",
        }
    }
}

/// What Citus made of `table`: None without the citus extension, or for a table it does not
/// manage. (Read as the extension's owner: pg_dist_partition is Citus's catalog.)
fn citus_table(table: pg_sys::Oid) -> Option<CitusTable> {
    as_extension_owner(|| {
        let installed = read_one::<bool>(
            "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
            &[],
        )
        .unwrap_or(false);
        if !installed {
            return None;
        }
        // partmethod 'n' (no distribution column): a reference table (replicated to every
        // node, repmodel 't'), a Citus local table (no colocation group) or a single-shard
        // distributed table.
        let kind = read_one::<String>(
            "SELECT CASE WHEN p.partmethod = 'n' AND p.repmodel = 't' THEN 'reference'
                         WHEN p.partmethod = 'n' AND p.colocationid = 0 THEN 'local'
                         ELSE 'distributed' END
               FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1",
            &[table.into()],
        )?;
        Some(match kind.as_str() {
            "reference" => CitusTable::Reference,
            "local" => CitusTable::Local,
            _ => CitusTable::Distributed,
        })
    })
}

pub struct Column {
    pub attnum: i16,
    pub name: String,
    pub not_null: bool,
    pub type_name: String,
}

impl Table {
    pub fn describe(oid: pg_sys::Oid) -> Table {
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT c.relname::text AS name, c.relkind::text,
                            c.relpersistence = 't' AS temporary, c.relpersistence = 'u' AS unlogged,
                            n.nspname IN ('pg_catalog', 'information_schema')
                              OR n.nspname LIKE 'pg\\_toast%' AS system,
                            pg_has_role(c.relowner, 'USAGE') AS owned_by_caller,
                            has_table_privilege(c.oid, 'REFERENCES') AS may_reference
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = $1",
                    None,
                    &[oid.into()],
                )
                .expect("reading pg_class");
            let Some(row) = rows.into_iter().next() else {
                error(
                    ERRCODE_UNDEFINED_TABLE,
                    format!("relation with OID {oid} does not exist"),
                )
                .raise()
            };
            Table {
                oid,
                name: row.column("name").unwrap(),
                relkind: row.column("relkind").unwrap(),
                temporary: row.column("temporary").unwrap(),
                unlogged: row.column("unlogged").unwrap(),
                system: row.column("system").unwrap(),
                owned_by_caller: row.column("owned_by_caller").unwrap(),
                may_reference: row.column("may_reference").unwrap(),
                citus: citus_table(oid),
            }
        })
    }

    /// Soft references join ordinary or partitioned, permanent, user tables.
    pub fn require_registrable(&self, role: &str) {
        if self.system {
            error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied: \"{}\" is a system catalog", self.name),
            )
            .raise();
        }
        let kind = match self.relkind.as_str() {
            "r" | "p" => None,
            "v" => Some("a view"),
            "m" => Some("a materialized view"),
            "S" => Some("a sequence"),
            "f" => Some("a foreign table"),
            "i" | "I" => Some("an index"),
            "c" => Some("a composite type"),
            "t" => Some("a TOAST table"),
            _ => Some("not a table"),
        };
        if let Some(kind) = kind {
            error(
                ERRCODE_WRONG_OBJECT_TYPE,
                format!("{role} \"{}\" is not a table", self.name),
            )
            .detail(format!(
                "\"{}\" is {kind}; soft references join ordinary or partitioned tables.",
                self.name
            ))
            .raise();
        }
        if self.temporary {
            error(
                ERRCODE_WRONG_OBJECT_TYPE,
                format!("{role} \"{}\" is a temporary table", self.name),
            )
            .detail("Registrations are permanent; a temporary table cannot hold one.")
            .raise();
        }
        if let Some(citus) = self.citus {
            // The registry, the check's plan and the capture live on this node; the shards'
            // writes run on theirs. Registered, such a table would refuse every write to its
            // shards ("soft reference does not exist") or never capture a deleted key.
            error(
                ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("{role} \"{}\" is {}", self.name, citus.describe()),
            )
            .detail(
                "pg_softfk does not support Citus tables yet: writes to their shards run on \
                 other nodes (or as other tables), where no soft reference is registered.",
            )
            .hint(
                "Keep a native foreign key to a reference table, or register soft references \
                 between tables Citus does not manage (docs/citus.md).",
            )
            .raise();
        }
    }

    pub fn require_owner(&self) {
        if !self.owned_by_caller {
            error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be owner of table {}", self.name),
            )
            .raise();
        }
    }

    /// As for a native foreign key, the caller needs REFERENCES on the parent.
    pub fn require_references_privilege(&self) {
        if !self.may_reference {
            error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for table {}", self.name),
            )
            .detail(
                "Registering a soft reference needs the REFERENCES privilege on the parent table.",
            )
            .raise();
        }
    }

    /// Lock the table in `mode` until the end of the transaction, as a statement would.
    pub fn lock(&self, mode: u32) {
        lock(self.oid, mode);
    }

    pub fn column(&self, name: &str) -> Column {
        let found = Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT a.attnum, a.attname::text AS name, a.attnotnull AS not_null,
                            format_type(a.atttypid, a.atttypmod) AS type_name
                       FROM pg_attribute a
                      WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped",
                    None,
                    &[self.oid.into(), DatumWithOid::from(name)],
                )
                .expect("reading pg_attribute");
            rows.into_iter().next().map(|row| Column {
                attnum: row.column("attnum").unwrap(),
                name: row.column("name").unwrap(),
                not_null: row.column("not_null").unwrap(),
                type_name: row.column("type_name").unwrap(),
            })
        });
        match found {
            Some(column) if column.attnum > 0 => column,
            Some(column) => error(
                ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "system column \"{}\" cannot be used in a soft reference",
                    column.name
                ),
            )
            .raise(),
            None => error(
                ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "column \"{name}\" of relation \"{}\" does not exist",
                    self.name
                ),
            )
            .raise(),
        }
    }

    /// The default parent column: the parent's single-column primary key.
    pub fn primary_key_column(&self) -> Column {
        let key = Spi::get_two_with_args::<i16, String>(
            "SELECT i.indnkeyatts, a.attname::text
               FROM (SELECT) always_one_row
               LEFT JOIN pg_index i ON i.indrelid = $1 AND i.indisprimary
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]",
            &[self.oid.into()],
        )
        .expect("reading pg_index");
        match key {
            (Some(1), Some(name)) => self.column(&name),
            (Some(_), _) => error(
                ERRCODE_INVALID_FOREIGN_KEY,
                format!("primary key of referenced table \"{}\" has more than one column", self.name),
            )
            .hint("Name the parent column: softfk_add(child, column, parent, parent_column => ...).")
            .raise(),
            _ => error(
                ERRCODE_INVALID_FOREIGN_KEY,
                format!("there is no primary key for referenced table \"{}\"", self.name),
            )
            .hint("Name a parent column that has a unique index: softfk_add(child, column, parent, parent_column => ...).")
            .raise(),
        }
    }
}

/// The parent column needs a unique index, and the child type must compare with it through
/// that index's equality operator: the same rule core applies to foreign keys.
pub fn require_comparable(child: &Table, child_col: &Column, parent: &Table, parent_col: &Column) {
    let nondeterministic = read_one::<String>(
        "SELECT co.collname::text
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
          WHERE (a.attrelid, a.attnum) IN (($1, $2), ($3, $4)) AND NOT co.collisdeterministic
          LIMIT 1",
        &[
            parent.oid.into(),
            parent_col.attnum.into(),
            child.oid.into(),
            child_col.attnum.into(),
        ],
    );
    if let Some(collation) = nondeterministic {
        // The check probes the parent's index with its collation, the purge deletes the child
        // rows equal to the deleted key: under a nondeterministic collation 'alice' matches
        // 'Alice' in one and not the other, and orphans would stay for ever.
        error(
            ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "soft reference from \"{}\" to \"{}\" cannot use a nondeterministic collation",
                child.name, parent.name
            ),
        )
        .detail(format!(
            "Column \"{}\" or \"{}\" uses collation \"{collation}\", which is not deterministic.",
            child_col.name, parent_col.name
        ))
        .hint("Register columns with deterministic collations (such as the database's default).")
        .raise();
    }
    let (index, operator) = Spi::get_two_with_args::<String, String>(
        "SELECT k.unique_index::text, k.operator
           FROM (SELECT) always_one_row
           LEFT JOIN softfk.key_comparison($1, $2, $3, $4) k ON true",
        &[
            parent.oid.into(),
            parent_col.attnum.into(),
            child.oid.into(),
            child_col.attnum.into(),
        ],
    )
    .expect("reading the parent's indexes");
    if index.is_none() {
        error(
            ERRCODE_INVALID_FOREIGN_KEY,
            format!(
                "there is no unique constraint matching given keys for referenced table \"{}\"",
                parent.name
            ),
        )
        .detail(format!(
            "Column \"{}\" needs a unique, non-deferrable, non-partial index of its own.",
            parent_col.name
        ))
        .raise();
    }
    if operator.is_none() {
        error(
            ERRCODE_DATATYPE_MISMATCH,
            format!(
                "soft reference from \"{}\" to \"{}\" cannot be implemented",
                child.name, parent.name
            ),
        )
        .detail(format!(
            "Key columns \"{}\" and \"{}\" are of incompatible types: {} and {}.",
            child_col.name, parent_col.name, child_col.type_name, parent_col.type_name
        ))
        .raise();
    }
}

/// 'set null' on a NOT NULL column could only fail later, in the purge: refuse it now.
pub fn require_nullable_for_set_null(on_delete: OnDelete, table: &Table, column: &Column) {
    if on_delete == OnDelete::SetNull && column.not_null {
        error(
            ERRCODE_INVALID_TABLE_DEFINITION,
            format!(
                "on_delete 'set null' needs a nullable column, but column \"{}\" of table \"{}\" is NOT NULL",
                column.name, table.name
            ),
        )
        .hint("Use on_delete => 'cascade', or drop the NOT NULL constraint first.")
        .raise();
    }
}

/// Whether a validated native foreign key already guarantees that the column has no orphans
/// (softfk_adopt registers the column before it drops the key).
pub fn has_valid_foreign_key(
    child: pg_sys::Oid,
    attnum: i16,
    parent: pg_sys::Oid,
    parent_attnum: i16,
) -> bool {
    read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint
                         WHERE contype = 'f' AND convalidated AND conrelid = $1 AND confrelid = $3
                           AND conkey = ARRAY[$2] AND confkey = ARRAY[$4])",
        &[
            child.into(),
            attnum.into(),
            parent.into(),
            parent_attnum.into(),
        ],
    )
    .unwrap_or(false)
}

/// The parent a child column is registered to, as `"table"("column")`, if it is registered.
pub fn registered_parent(child: pg_sys::Oid, attnum: i16) -> Option<String> {
    as_extension_owner(|| {
        Spi::get_one_with_args::<String>(
            "SELECT (SELECT format('%s(%I)', r.parent_table, a.attname)
                   FROM softfk.reference r
                   JOIN pg_attribute a ON a.attrelid = r.parent_table AND a.attnum = r.parent_attnum
                  WHERE r.child_table = $1 AND r.child_attnum = $2)",
            &[child.into(), attnum.into()],
        )
    })
    .expect("reading softfk.reference")
}

/// Refused (42501) unless the caller owns the table, as ALTER TABLE requires.
pub fn require_owner(table: pg_sys::Oid) {
    Table::describe(table).require_owner();
}

/// Lock `table` in `mode` until the end of the transaction, as a statement would.
pub fn lock(table: pg_sys::Oid, mode: u32) {
    // SAFETY: takes a heavyweight lock on a relation by oid; it is released with the
    // transaction, as any statement's. A table dropped meanwhile is locked harmlessly.
    unsafe { pg_sys::LockRelationOid(table, mode as pg_sys::LOCKMODE) };
}

/// Release one `lock` of `table` taken by [`lock`] or [`try_lock`] in this transaction, before
/// its end: only where nothing was read under it.
pub fn unlock(table: pg_sys::Oid, mode: u32) {
    // SAFETY: releases one count of a lock this transaction holds on the relation.
    unsafe { pg_sys::UnlockRelationOid(table, mode as pg_sys::LOCKMODE) };
}

/// Lock `table` in `mode` until the end of the transaction if no other session holds or
/// awaits a lock on it in a conflicting mode; false, waiting for nothing, otherwise.
pub fn try_lock(table: pg_sys::Oid, mode: u32) -> bool {
    // SAFETY: as lock(), without waiting.
    unsafe { pg_sys::ConditionalLockRelationOid(table, mode as pg_sys::LOCKMODE) }
}

/// How a purge statement finds the rows of its keys in a leaf ([`key_lookup`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyLookup {
    /// An index on the key column: the statement probes it once per key, and asks the parent
    /// only about the keys that have a row.
    Index,
    /// No index on the key column: the statement reads the whole leaf once. Asking first
    /// which keys have a row would read it a second time.
    FullRead,
}

/// Whether `leaf` has a valid, non-partial btree or hash index that leads with `column`.
pub fn key_lookup(leaf: pg_sys::Oid, column: &str) -> KeyLookup {
    let indexed = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
             SELECT FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_catalog.pg_am am ON am.oid = ic.relam
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = $1 AND a.attname = $2 AND i.indisvalid AND i.indpred IS NULL
                AND am.amname IN ('btree', 'hash'))",
        &[leaf.into(), column.into()],
    )
    .expect("reading pg_index")
    .unwrap_or(false);
    if indexed {
        KeyLookup::Index
    } else {
        KeyLookup::FullRead
    }
}

/// A leaf of a partition tree ([`leaf_partitions`]).
#[derive(Clone)]
pub struct Leaf {
    pub oid: pg_sys::Oid,
    /// `schema.name`, quoted.
    pub qualified_name: String,
}

/// The leaves of a partition tree: the partitions (at every level) of a partitioned table or
/// index that hold rows, or the relation itself when it is not partitioned. Ordered by oid,
/// so that everyone who locks them locks them in the same order. Read from pg_inherits, not
/// with pg_partition_tree(), which locks every partition: the check builds its plan from
/// this on the hot path of writes, and must not queue behind a REINDEX of some partition.
pub fn leaf_partitions(relation: pg_sys::Oid) -> Vec<Leaf> {
    partition_tree_of(relation, "('r', 'i')")
}

/// Every table of a partition tree, the partitioned ones too, or the table itself when it is
/// not partitioned; ordered by oid, read without locks, as [`leaf_partitions`].
pub fn partition_tree(relation: pg_sys::Oid) -> Vec<Leaf> {
    partition_tree_of(relation, "('r', 'p')")
}

fn partition_tree_of(relation: pg_sys::Oid, relkinds: &str) -> Vec<Leaf> {
    Spi::connect(|client| {
        client
            .select(
                &format!(
                    "WITH RECURSIVE tree (relid) AS (
                     SELECT $1::pg_catalog.oid
                     UNION ALL
                     SELECT i.inhrelid
                       FROM tree
                       JOIN pg_catalog.pg_class p ON p.oid = tree.relid AND p.relkind IN ('p', 'I')
                       JOIN pg_catalog.pg_inherits i ON i.inhparent = tree.relid)
                 SELECT tree.relid AS leaf,
                        pg_catalog.format('%I.%I', n.nspname, c.relname) AS qualified_name
                   FROM tree
                   JOIN pg_catalog.pg_class c ON c.oid = tree.relid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN {relkinds}
                  ORDER BY tree.relid"
                ),
                None,
                &[relation.into()],
            )
            .expect("reading pg_inherits")
            .map(|row| Leaf {
                oid: row.column("leaf").expect("a leaf"),
                qualified_name: row.column("qualified_name").expect("a leaf's name"),
            })
            .collect()
    })
}

/// A table whose native foreign key points at one of the tables asked about
/// ([`referencing_tables`]), directly or through cascades.
pub struct Referencing {
    /// The table asked about that it points at, at the start of the chain.
    pub referenced: pg_sys::Oid,
    pub table: Leaf,
    /// Whether a DELETE from `referenced` writes it (ON DELETE CASCADE, SET NULL, SET
    /// DEFAULT: then the tables pointing at it count too) or only reads it (NO ACTION,
    /// RESTRICT: core's check reads it FOR KEY SHARE).
    pub written: bool,
    pub partitioned: bool,
}

/// What a DELETE from each of `tables` locks besides it through native foreign keys, in one
/// read of pg_constraint. Ordered by referenced table, then oid.
pub fn referencing_tables(tables: &[pg_sys::Oid]) -> Vec<Referencing> {
    Spi::connect(|client| {
        client
            .select(
                "WITH RECURSIVE referencing (referenced, relid, written) AS (
                     SELECT k.confrelid, k.conrelid, k.confdeltype IN ('c', 'n', 'd')
                       FROM pg_catalog.pg_constraint k
                      WHERE k.contype = 'f' AND k.confrelid = ANY ($1)
                     UNION
                     SELECT r.referenced, k.conrelid, k.confdeltype IN ('c', 'n', 'd')
                       FROM referencing r
                       JOIN pg_catalog.pg_constraint k ON k.contype = 'f' AND k.confrelid = r.relid
                      WHERE r.written)
                 SELECT r.referenced, r.relid,
                        pg_catalog.format('%I.%I', n.nspname, c.relname) AS qualified_name,
                        pg_catalog.bool_or(r.written) AS written, c.relkind = 'p' AS partitioned
                   FROM referencing r
                   JOIN pg_catalog.pg_class c ON c.oid = r.relid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  GROUP BY r.referenced, r.relid, n.nspname, c.relname, c.relkind
                  ORDER BY r.referenced, r.relid",
                None,
                &[tables.to_vec().into()],
            )
            .expect("reading pg_constraint")
            .map(|row| Referencing {
                referenced: row.column("referenced").expect("a table"),
                table: Leaf {
                    oid: row.column("relid").expect("a table"),
                    qualified_name: row.column("qualified_name").expect("a table's name"),
                },
                written: row.column("written").expect("written"),
                partitioned: row.column("partitioned").expect("partitioned"),
            })
            .collect()
    })
}
