//! The check's plan: what the trigger needs to check one reference on one table, built once
//! per backend and kept until a relation it depends on changes; and the probe of the
//! parent's unique index that uses it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::catalog::table::leaf_partitions;
use crate::postgres::error::error;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::Columns;

/// What the trigger needs to check one reference on one table (the registered child, or one
/// of its partitions, whose column numbers may differ). Built once and cached per backend.
pub struct Plan {
    /// The key column in the table the trigger fired on.
    pub attnum: i16,
    pub key_type: KeyType,
    key_output_function: pg_sys::Oid,
    /// The parent index's equality function for (parent type, child type), with the scan
    /// key's subtype and collation, and the implicit cast applied to the child key first.
    comparison_function: pg_sys::Oid,
    right_type: pg_sys::Oid,
    collation: pg_sys::Oid,
    cast_function: pg_sys::Oid,
    /// (table, unique index) to probe: the parent itself, or each leaf partition of it.
    parent_indexes: Vec<(pg_sys::Oid, pg_sys::Oid)>,
    /// Relations whose change (relcache invalidation) makes this plan stale.
    depends_on: Vec<pg_sys::Oid>,
    /// For messages: `child(column) -> parent(column)`, the column here, the parent table.
    pub label: String,
    pub column_name: String,
    pub parent_name: String,
}

#[derive(Clone, Copy)]
pub struct KeyType {
    pub length: i16,
    pub by_value: bool,
}

/// How a probe decides that an index entry's row is there ([`Plan::probe`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeapCheck {
    /// Take the visibility map's word for a row on an all-visible page, else read the heap.
    /// Only under `SnapshotSelf`: btree keeps its pin on the index page of a non-MVCC scan
    /// while the entry is looked at, and VACUUM cannot remove the entry, free its line pointer
    /// and mark the page all-visible until that pin goes.
    VisibilityMapFirst,
    /// Always read the heap. Under an MVCC snapshot btree drops that pin as soon as it has
    /// read the index page (core allows it because a plain index scan then reads the heap,
    /// which a VACUUM in between cannot fool): the entry of a long-deleted parent row could be
    /// vacuumed away, its line pointer freed and the page marked all-visible before the map
    /// is read, and the probe would find a row that is gone. (An index-only scan keeps the
    /// pin for that reason: nbtree's README, "Making concurrent TID recycling safe".)
    AlwaysFetch,
}

thread_local! {
    static PLANS: RefCell<HashMap<(i64, pg_sys::Oid), Rc<Plan>>> = RefCell::new(HashMap::new());
    static INVALIDATION_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

impl Plan {
    /// The cached plan, or a fresh one. The cache is not borrowed while PostgreSQL runs:
    /// opening a relation can process invalidations, which empty it.
    pub fn get(reference: i64, table: pg_sys::Oid) -> Rc<Plan> {
        if let Some(plan) = PLANS.with_borrow(|plans| plans.get(&(reference, table)).cloned()) {
            return plan;
        }
        if !INVALIDATION_REGISTERED.get() {
            // SAFETY: registers a callback with the signature PostgreSQL expects, once per
            // backend, for the life of the process.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(Some(forget_plans), pg_sys::Datum::from(0))
            };
            INVALIDATION_REGISTERED.set(true);
        }
        let plan = Rc::new(Plan::load(reference, table));
        PLANS.with_borrow_mut(|plans| plans.insert((reference, table), plan.clone()));
        plan
    }

    fn load(reference: i64, table: pg_sys::Oid) -> Plan {
        const LOAD: &str = "
            SELECT here.attnum, ca.atttypid AS key_type, r.child_table::oid AS registered_child,
                   format('%I(%I) -> %I(%I)', c.relname, ca.attname, p.relname, pa.attname) AS label,
                   here.attname::text AS column_name, p.relname::text AS parent_name,
                   k.unique_index::oid, k.comparison_function::oid, k.right_type, k.collation,
                   k.cast_function, r.parent_table::oid AS parent,
                   (r.child_table::oid = $2
                    OR r.child_table::oid IN (SELECT a.relid::oid FROM pg_partition_ancestors($2) a))
                   AS on_registered_child
              FROM softfk.reference r
              JOIN pg_class c ON c.oid = r.child_table
              JOIN pg_attribute ca ON ca.attrelid = r.child_table AND ca.attnum = r.child_attnum
              JOIN pg_class p ON p.oid = r.parent_table
              JOIN pg_attribute pa ON pa.attrelid = r.parent_table AND pa.attnum = r.parent_attnum
              LEFT JOIN pg_attribute here
                     ON here.attrelid = $2 AND here.attname = ca.attname AND NOT here.attisdropped
              LEFT JOIN LATERAL softfk.key_comparison(r.parent_table, r.parent_attnum,
                                                      r.child_table, r.child_attnum) k ON true
             WHERE r.id = $1";
        let plan = as_extension_owner(|| {
            Spi::connect(|client| {
                let rows = client
                    .select(LOAD, None, &[reference.into(), table.into()])
                    .expect("reading softfk.reference");
                rows.into_iter().next().map(|row| {
                    let oid = |name: &str| {
                        row.column::<pg_sys::Oid>(name)
                            .unwrap_or(pg_sys::InvalidOid)
                    };
                    let text = |name: &str| row.column::<String>(name).unwrap_or_default();
                    if !row.column::<bool>("on_registered_child").unwrap_or(false) {
                        return Err(text("label"));
                    }
                    let key_type_oid = oid("key_type");
                    let (mut length, mut by_value) = (0i16, false);
                    let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
                    // SAFETY: catalog lookups of a type that exists (the column's, just read);
                    // they write only through the pointers given.
                    unsafe {
                        pg_sys::get_typlenbyval(key_type_oid, &mut length, &mut by_value);
                        pg_sys::getTypeOutputInfo(key_type_oid, &mut output, &mut varlena);
                    }
                    // A partitioned parent's unique index has no storage: probe its leaves'.
                    let unique_index = oid("unique_index");
                    let parent_indexes: Vec<_> = if unique_index == pg_sys::InvalidOid {
                        Vec::new()
                    } else {
                        leaf_partitions(unique_index)
                            .into_iter()
                            .map(|index| {
                                (
                                    // SAFETY: a catalog lookup of an index that exists (just
                                    // listed).
                                    unsafe { pg_sys::IndexGetRelation(index.oid, false) },
                                    index.oid,
                                )
                            })
                            .collect()
                    };
                    let mut depends_on = vec![table, oid("registered_child"), oid("parent")];
                    depends_on.extend(parent_indexes.iter().map(|(table, _)| *table));
                    Ok(Plan {
                        attnum: row.column::<i16>("attnum").unwrap_or(0),
                        key_type: KeyType { length, by_value },
                        key_output_function: output,
                        comparison_function: oid("comparison_function"),
                        right_type: oid("right_type"),
                        collation: oid("collation"),
                        cast_function: oid("cast_function"),
                        parent_indexes,
                        depends_on,
                        label: text("label"),
                        column_name: text("column_name"),
                        parent_name: text("parent_name"),
                    })
                })
            })
        });
        let plan = match plan {
            Some(Ok(plan)) => Some(plan),
            // Only the registered child (or a partition of it) may be checked: a check
            // trigger on any other table would tell its owner, through 23503, which keys a
            // parent they cannot read holds.
            Some(Err(label)) => error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("softfk.check_key() for soft reference {label} fired on another table"),
            )
            .detail(
                "A soft reference's check runs only on its child table and the child's partitions.",
            )
            .hint("Register the table's own column with softfk_add().")
            .raise(),
            None => None,
        };
        let Some(plan) = plan else {
            error(
                ERRCODE_UNDEFINED_OBJECT,
                format!("soft reference {reference} does not exist"),
            )
            .detail("A pg_softfk check trigger names a registration that is gone.")
            .hint("Drop the trigger, or register the column again with softfk_add().")
            .raise()
        };
        if plan.attnum <= 0 || plan.comparison_function == pg_sys::InvalidOid {
            error(
                ERRCODE_DATATYPE_MISMATCH,
                format!("soft reference {} can no longer be checked", plan.label),
            )
            .detail("The parent column needs a unique index comparable with the child column.")
            .hint("Change the column type back, or remove the soft reference with softfk_drop().")
            .raise();
        }
        plan
    }

    /// Is `key` present in the parent right now (committed, or written by this transaction)?
    /// An index probe with AccessShareLock on the parent and its index (as any SELECT takes)
    /// and no lock on the row.
    ///
    /// The first probe runs under `SnapshotSelf`: rows committed by anyone up to the instant
    /// each is fetched, plus this transaction's own writes, whatever their command id (a user
    /// inserted by the same statement as the child row). Its verdict "found" is final. Its
    /// "not found" is not: `SnapshotSelf` judges each heap tuple when it fetches it, so when
    /// a concurrent UPDATE of the parent row is not HOT (an indexed column changed, or the
    /// page was full) the index holds two entries, and if the updater commits between the two
    /// fetches, the probe sees the new version as not yet committed and the old one as
    /// already dead: neither. (Core's unique check, `_bt_check_unique`, meets the same
    /// problem with a dirty snapshot and waits for the updater; waiting behind an update of
    /// the user row is what this check exists to avoid.) So a miss is probed again under a
    /// fresh MVCC snapshot, which sees every other transaction as of one instant: committed
    /// before it, the new version; not, the old one.
    ///
    /// # Safety
    /// `key` is a datum of the plan's key type (the child column's).
    pub unsafe fn parent_has(&self, key: pg_sys::Datum) -> bool {
        // SAFETY: the key is of the plan's type; the snapshot taken here is registered, and
        // unregistered after its probe (an error releases it with the resource owner).
        unsafe {
            let key = if self.cast_function == pg_sys::InvalidOid {
                key
            } else {
                pg_sys::OidFunctionCall1Coll(self.cast_function, pg_sys::InvalidOid, key)
            };
            if self.probe(
                key,
                &raw mut pg_sys::SnapshotSelfData,
                HeapCheck::VisibilityMapFirst,
            ) {
                return true;
            }
            // SAFETY: GetLatestSnapshot returns a static snapshot; RegisterSnapshot copies it and
            // keeps our xmin (so nothing it sees is pruned) until it is unregistered below. An
            // error in between aborts the (sub)transaction, whose resource owner releases it.
            let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
            // This transaction's own rows as SnapshotSelf sees them, whatever their command id: a
            // parent row deleted by this very command (`WITH d AS (DELETE ...) INSERT ...`) is
            // gone, not "deleted after the scan began". (The registered snapshot is our own copy.)
            (*snapshot).curcid = pg_sys::InvalidCommandId;
            let found = self.probe(key, snapshot, HeapCheck::AlwaysFetch);
            pg_sys::UnregisterSnapshot(snapshot);
            found
        }
    }

    /// One probe of the parent's unique index (or each of its leaves' indexes) for `key`
    /// under `snapshot`.
    ///
    /// With [`HeapCheck::VisibilityMapFirst`], an index entry whose heap page the visibility
    /// map marks all-visible is found without reading the heap: every row on such a page is
    /// visible to every snapshot, this one included (an index-only scan's rule), and deleting
    /// or updating a row clears the bit before it writes the row. Reading the heap page is
    /// about a quarter of a probe when the parent row is not in the CPU's caches
    /// (BENCHMARKS.md, "Where a check's time goes"), and an `auth_user` row that no one has
    /// updated since the last VACUUM sits on such a page.
    ///
    /// # Safety
    /// `key` is a datum of the parent key's type (after the plan's cast), `snapshot` a valid
    /// snapshot, and `heap_check` [`HeapCheck::AlwaysFetch`] for an MVCC snapshot.
    unsafe fn probe(
        &self,
        key: pg_sys::Datum,
        snapshot: pg_sys::Snapshot,
        heap_check: HeapCheck,
    ) -> bool {
        // SAFETY: relations are opened and closed here (their locks kept to the end of the
        // transaction, as any query's); the scan key uses the plan's function, type and
        // collation; the slot and the visibility map buffer are made lazily and released
        // before the scan ends.
        unsafe {
            let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
            self.parent_indexes.iter().any(|&(table, index)| {
                let heap = pg_sys::table_open(table, lock);
                let index = pg_sys::index_open(index, lock);
                let mut scan_key: pg_sys::ScanKeyData = std::mem::zeroed();
                pg_sys::ScanKeyEntryInitialize(
                    &mut scan_key,
                    0,
                    1,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    self.right_type,
                    self.collation,
                    self.comparison_function,
                    key,
                );
                // (PostgreSQL 18 added index_beginscan's instrumentation argument.)
                #[cfg(not(feature = "pg18"))]
                let scan = pg_sys::index_beginscan(heap, index, snapshot, 1, 0);
                #[cfg(feature = "pg18")]
                let scan =
                    pg_sys::index_beginscan(heap, index, snapshot, std::ptr::null_mut(), 1, 0);
                pg_sys::index_rescan(scan, &mut scan_key, 1, std::ptr::null_mut(), 0);
                let mut visibility_map = pg_sys::InvalidBuffer as pg_sys::Buffer;
                let mut slot: *mut pg_sys::TupleTableSlot = std::ptr::null_mut();
                let mut found = false;
                // Each entry for the key: the live row, and versions not yet vacuumed away.
                loop {
                    let tid = pg_sys::index_getnext_tid(
                        scan,
                        pg_sys::ScanDirection::ForwardScanDirection,
                    );
                    if tid.is_null() {
                        break;
                    }
                    if heap_check == HeapCheck::VisibilityMapFirst {
                        let block = pgrx::itemptr::item_pointer_get_block_number_no_check(*tid);
                        let status =
                            pg_sys::visibilitymap_get_status(heap, block, &mut visibility_map);
                        if u32::from(status) & pg_sys::VISIBILITYMAP_ALL_VISIBLE != 0 {
                            found = true;
                            break;
                        }
                    }
                    if slot.is_null() {
                        slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
                    }
                    // The row's HOT chain, under the snapshot (as index_getnext_slot does).
                    if pg_sys::index_fetch_heap(scan, slot) {
                        found = true;
                        break;
                    }
                }
                if visibility_map != pg_sys::InvalidBuffer as pg_sys::Buffer {
                    pg_sys::ReleaseBuffer(visibility_map);
                }
                if !slot.is_null() {
                    pg_sys::ExecDropSingleTupleTableSlot(slot);
                }
                pg_sys::index_endscan(scan);
                // Locks are kept to the end of the transaction, as for any query.
                pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
                pg_sys::table_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
                found
            })
        }
    }

    /// # Safety
    /// `key` is a datum of the plan's key type.
    pub unsafe fn key_text(&self, key: pg_sys::Datum) -> String {
        // SAFETY: the output function is the key type's; its result is a palloc'd C string.
        unsafe {
            let text = pg_sys::OidOutputFunctionCall(self.key_output_function, key);
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}

/// Relcache invalidation: a child, parent or parent partition changed (ALTER TABLE, a new or
/// dropped index, ATTACH PARTITION ...). Forget the plans that depend on it.
#[pg_guard]
unsafe extern "C-unwind" fn forget_plans(_arg: pg_sys::Datum, relation: pg_sys::Oid) {
    PLANS.with_borrow_mut(|plans| {
        if relation == pg_sys::InvalidOid {
            plans.clear();
        } else {
            plans.retain(|_, plan| !plan.depends_on.contains(&relation));
        }
    });
}
