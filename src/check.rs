//! Check: a child key written by INSERT or UPDATE must exist in the parent, verified without
//! locking the parent row.
//!
//! A native foreign key checks each new child row with
//! `SELECT 1 FROM ONLY parent WHERE key = $1 FOR KEY SHARE`: the row lock is what keeps the
//! parent from being deleted before the child commits, and it is also what makes every
//! enrollment of a hot user queue behind whoever holds that user's row, and what turns many
//! concurrent enrollers into MultiXacts. This check probes the parent's unique index directly,
//! under `SnapshotSelf` (rows committed by anyone up to this instant, plus this transaction's
//! own writes, including a user saved earlier in the same transaction), and takes no row lock:
//! nothing is written to the parent's pages.
//!
//! The price is a race window, stated in the README: a parent whose DELETE commits after this
//! check has looked (whether before or after the child commits) leaves an orphan. The purge
//! closes that window after the fact.
//!
//! The triggers (sql/check.sql) are constraint triggers, so deferral and `SET CONSTRAINTS`
//! come from core's after-trigger queue. Their WHEN clause asks [`pending`] whether the key
//! already has a check queued, so repeated keys queue one event, not one per row.

mod pending;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::error::error;
use crate::fmgr::function_info_v1;
use crate::registry;
use pending::KeyBytes;

/// The check's settings (`pg_softfk.*` GUCs); called from `_PG_init`.
pub fn define_settings() {
    pending::define_settings();
}

/// Install the check triggers of a reference for `validate` ('off' installs none).
pub fn install(reference: i64, child: pg_sys::Oid, child_column: &str, validate: &str) {
    Spi::run_with_args(
        "SELECT softfk.install_check($1, $2, $3, $4)",
        &[
            reference.into(),
            child.into(),
            child_column.into(),
            validate.into(),
        ],
    )
    .expect("installing the check triggers");
}

/// Remove the check triggers of a reference, wherever they are. Refused while checks of this
/// transaction are still queued on the child (core would fail them at COMMIT with "could not
/// find trigger"), as ALTER TABLE refuses a table with pending trigger events.
pub fn remove(reference: i64, child: pg_sys::Oid) {
    if unsafe { pg_sys::AfterTriggerPendingOnRel(child) } {
        error(
            ERRCODE_OBJECT_IN_USE,
            "cannot change the check of a soft reference while its checks are pending",
        )
        .detail("This transaction wrote rows to the child table whose deferred checks have not run yet.")
        .hint("Run SET CONSTRAINTS ALL IMMEDIATE first, or do it in a transaction of its own.")
        .raise();
    }
    Spi::run_with_args("SELECT softfk.remove_check($1)", &[reference.into()])
        .expect("removing the check triggers");
}

/// What the trigger needs to check one reference on one table (the registered child, or one
/// of its partitions, whose column numbers may differ). Built once and cached per backend.
struct Plan {
    /// The key column in the table the trigger fired on.
    attnum: i16,
    key_type: KeyType,
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
    registered_child: pg_sys::Oid,
    registered_column: String,
    /// For messages: `child(column) -> parent(column)`, the column here, the parent table.
    label: String,
    column_name: String,
    parent_name: String,
}

#[derive(Clone, Copy)]
struct KeyType {
    length: i16,
    by_value: bool,
}

thread_local! {
    static PLANS: RefCell<HashMap<(i64, pg_sys::Oid), Rc<Plan>>> = RefCell::new(HashMap::new());
    static INVALIDATION_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

impl Plan {
    /// The cached plan, or a fresh one. The cache is not borrowed while PostgreSQL runs:
    /// opening a relation can process invalidations, which empty it.
    fn get(reference: i64, table: pg_sys::Oid) -> Rc<Plan> {
        if let Some(plan) = PLANS.with_borrow(|plans| plans.get(&(reference, table)).cloned()) {
            return plan;
        }
        if !INVALIDATION_REGISTERED.get() {
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
            SELECT here.attnum, ca.atttypid, r.child_table::oid, ca.attname::text,
                   format('%I(%I) -> %I(%I)', c.relname, ca.attname, p.relname, pa.attname),
                   here.attname::text, p.relname::text,
                   k.comparison_function::oid, k.right_type, k.collation, k.cast_function,
                   leaves.tables, leaves.indexes, r.parent_table::oid,
                   (r.child_table::oid = $2
                    OR r.child_table::oid IN (SELECT a.relid::oid FROM pg_partition_ancestors($2) a))
              FROM softfk.reference r
              JOIN pg_class c ON c.oid = r.child_table
              JOIN pg_attribute ca ON ca.attrelid = r.child_table AND ca.attnum = r.child_attnum
              JOIN pg_class p ON p.oid = r.parent_table
              JOIN pg_attribute pa ON pa.attrelid = r.parent_table AND pa.attnum = r.parent_attnum
              LEFT JOIN pg_attribute here
                     ON here.attrelid = $2 AND here.attname = ca.attname AND NOT here.attisdropped
              LEFT JOIN LATERAL softfk.key_comparison(r.parent_table, r.parent_attnum,
                                                      r.child_table, r.child_attnum) k ON true
              -- A partitioned parent's unique index has no storage: probe its leaves' indexes.
              LEFT JOIN LATERAL (
                    WITH RECURSIVE tree(index) AS (
                        SELECT k.unique_index::oid
                        UNION ALL
                        SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.index)
                    SELECT array_agg(x.indrelid::oid ORDER BY x.indexrelid) AS tables,
                           array_agg(x.indexrelid::oid ORDER BY x.indexrelid) AS indexes
                      FROM tree
                      JOIN pg_index x ON x.indexrelid = tree.index
                      JOIN pg_class xc ON xc.oid = x.indexrelid AND xc.relkind = 'i') leaves ON true
             WHERE r.id = $1";
        let plan = registry::as_extension_owner(|| {
            Spi::connect(|client| {
                let rows = client
                    .select(LOAD, None, &[reference.into(), table.into()])
                    .expect("reading softfk.reference");
                rows.into_iter().next().map(|row| {
                    let oid = |n: usize| {
                        row.get::<pg_sys::Oid>(n)
                            .unwrap()
                            .unwrap_or(pg_sys::InvalidOid)
                    };
                    let text = |n: usize| row.get::<String>(n).unwrap().unwrap_or_default();
                    let oids = |n: usize| -> Vec<pg_sys::Oid> {
                        row.get::<Vec<pg_sys::Oid>>(n).unwrap().unwrap_or_default()
                    };
                    let key_type_oid = oid(2);
                    let (mut length, mut by_value) = (0i16, false);
                    let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
                    unsafe {
                        pg_sys::get_typlenbyval(key_type_oid, &mut length, &mut by_value);
                        pg_sys::getTypeOutputInfo(key_type_oid, &mut output, &mut varlena);
                    }
                    let parent_tables = oids(12);
                    let parent_indexes: Vec<_> =
                        parent_tables.iter().copied().zip(oids(13)).collect();
                    if !row.get::<bool>(15).unwrap().unwrap_or(false) {
                        return Err(text(5));
                    }
                    let mut depends_on = vec![table, oid(3), oid(14)];
                    depends_on.extend(parent_tables);
                    Ok(Plan {
                        attnum: row.get::<i16>(1).unwrap().unwrap_or(0),
                        key_type: KeyType { length, by_value },
                        key_output_function: output,
                        comparison_function: oid(8),
                        right_type: oid(9),
                        collation: oid(10),
                        cast_function: oid(11),
                        parent_indexes,
                        depends_on,
                        registered_child: oid(3),
                        registered_column: text(4),
                        label: text(5),
                        column_name: text(6),
                        parent_name: text(7),
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
    unsafe fn parent_has(&self, key: pg_sys::Datum) -> bool {
        let key = if self.cast_function == pg_sys::InvalidOid {
            key
        } else {
            pg_sys::OidFunctionCall1Coll(self.cast_function, pg_sys::InvalidOid, key)
        };
        if self.probe(key, &raw mut pg_sys::SnapshotSelfData) {
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
        let found = self.probe(key, snapshot);
        pg_sys::UnregisterSnapshot(snapshot);
        found
    }

    /// One probe of the parent's unique index (or each of its leaves' indexes) for `key`
    /// under `snapshot`.
    unsafe fn probe(&self, key: pg_sys::Datum, snapshot: pg_sys::Snapshot) -> bool {
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
            let scan = pg_sys::index_beginscan(heap, index, snapshot, 1, 0);
            pg_sys::index_rescan(scan, &mut scan_key, 1, std::ptr::null_mut(), 0);
            let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
            let found =
                pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot);
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            pg_sys::index_endscan(scan);
            // Locks are kept to the end of the transaction, as for any query.
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::table_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
            found
        })
    }

    /// Does a live row written by this transaction still hold `key`? Asked only on the rare
    /// path where a queued check's own row is gone but other rows relied on that check.
    fn child_written_here_has(&self, key_text: &str) -> bool {
        let reference = registry::load(registry::Which::Child(
            self.registered_child,
            &self.registered_column,
        ))
        .pop()
        .expect("the registration was just read");
        // Not as the caller, who may INSERT into the child without being allowed to SELECT
        // from it; core's RI queries likewise run as a table owner.
        registry::as_extension_owner(|| {
            Spi::get_one_with_args::<bool>(
                &reference.rows_written_here_with_key_sql(),
                &[DatumWithOid::from(key_text)],
            )
        })
        .expect("looking for this transaction's rows")
        .unwrap_or(false)
    }

    unsafe fn key_text(&self, key: pg_sys::Datum) -> String {
        let text = pg_sys::OidOutputFunctionCall(self.key_output_function, key);
        CStr::from_ptr(text).to_string_lossy().into_owned()
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

/// A key's bytes, for the pending-check set.
unsafe fn key_bytes(key: pg_sys::Datum, key_type: KeyType) -> KeyBytes {
    if key_type.by_value {
        return KeyBytes::Word(key.value() as u64);
    }
    let bytes = match key_type.length {
        -1 => {
            let value = pg_sys::pg_detoast_datum_packed(key.cast_mut_ptr());
            std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(value) as *const u8,
                pgrx::varlena::varsize_any_exhdr(value),
            )
        }
        -2 => CStr::from_ptr(key.cast_mut_ptr()).to_bytes(),
        length => std::slice::from_raw_parts(key.cast_mut_ptr::<u8>(), length as usize),
    };
    KeyBytes::Bytes(bytes.into())
}

fn reference_argument(trigger: &pg_sys::Trigger) -> i64 {
    let argument = (trigger.tgnargs == 1)
        .then(|| unsafe { CStr::from_ptr(*trigger.tgargs) })
        .and_then(|arg| arg.to_str().ok()?.parse().ok());
    argument.unwrap_or_else(|| {
        error(
            ERRCODE_INVALID_PARAMETER_VALUE,
            "softfk.check_key() takes one argument, the soft reference's id",
        )
        .raise()
    })
}

// (The two functions below take `fcinfo` directly: a trigger, and a WHEN-clause helper that
// caches in `fn_extra`.)
function_info_v1!(pg_finfo_softfk_check_key);

/// SQL: softfk.check_key() RETURNS trigger — AFTER INSERT / UPDATE, FOR EACH ROW, one argument:
/// the reference id.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_check_key(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    use pgrx::trigger_support::*;
    let fired_properly = called_as_trigger(fcinfo) && {
        let event = (*((*fcinfo).context as *mut pg_sys::TriggerData)).tg_event;
        trigger_fired_after(event)
            && trigger_fired_for_row(event)
            && (trigger_fired_by_insert(event) || trigger_fired_by_update(event))
    };
    if !fired_properly {
        error(
            ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "softfk.check_key() must be fired AFTER INSERT or UPDATE, FOR EACH ROW",
        )
        .raise();
    }
    let data = &*((*fcinfo).context as *mut pg_sys::TriggerData);
    let slot = if trigger_fired_by_update(data.tg_event) {
        data.tg_newslot
    } else {
        data.tg_trigslot
    };
    let reference = reference_argument(&*data.tg_trigger);
    let table = (*data.tg_relation).rd_id;
    let plan = Plan::get(reference, table);

    let mut is_null = false;
    let key = pg_sys::slot_getattr(slot, plan.attnum.into(), &mut is_null);
    if is_null {
        return pg_sys::Datum::from(0);
    }
    let dependents = pending::take(reference, key_bytes(key, plan.key_type));
    // Core's rule: a row deleted or updated again since this event was queued is not checked
    // here (its newer version has its own event, or is gone) — unless other rows skipped
    // their own check because this one was queued.
    let row_is_live = pg_sys::table_tuple_satisfies_snapshot(
        data.tg_relation,
        slot,
        &raw mut pg_sys::SnapshotSelfData,
    );
    if !row_is_live && dependents == 0 {
        return pg_sys::Datum::from(0);
    }
    if plan.parent_has(key) {
        return pg_sys::Datum::from(0);
    }
    let key_text = plan.key_text(key);
    if !row_is_live && !plan.child_written_here_has(&key_text) {
        return pg_sys::Datum::from(0);
    }
    let table_name = CStr::from_ptr((*(*data.tg_relation).rd_rel).relname.data.as_ptr());
    error(
        ERRCODE_FOREIGN_KEY_VIOLATION,
        format!(
            "insert or update on table \"{}\" violates soft reference {}",
            table_name.to_string_lossy(),
            plan.label
        ),
    )
    .detail(format!(
        "Key ({})=({}) is not present in table \"{}\".",
        plan.column_name, key_text, plan.parent_name
    ))
    .raise()
}

function_info_v1!(pg_finfo_softfk_key_needs_check);

/// SQL: softfk.key_needs_check(reference bigint, key anyelement) RETURNS boolean STRICT.
/// Runs for every written row, so the key type's length is looked up once per trigger and
/// kept in the call's `fn_extra`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_key_needs_check(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let flinfo = (*fcinfo).flinfo;
    if (*flinfo).fn_extra.is_null() {
        let type_oid = pg_sys::get_fn_expr_argtype(flinfo, 1);
        let key_type =
            pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, size_of::<KeyType>()) as *mut KeyType;
        let (mut length, mut by_value) = (0i16, false);
        pg_sys::get_typlenbyval(type_oid, &mut length, &mut by_value);
        key_type.write(KeyType { length, by_value });
        (*flinfo).fn_extra = key_type.cast();
    }
    let key_type = *((*flinfo).fn_extra as *const KeyType);
    let args = (*fcinfo).args.as_slice(2);
    let reference = args[0].value.value() as i64;
    let needed = pending::needs_check(reference, key_bytes(args[1].value, key_type));
    pg_sys::Datum::from(needed)
}

/// SQL: softfk.written_by_this_transaction(row_xmin xid) RETURNS boolean
#[pg_extern(sql = false)]
fn written_by_this_transaction(row_xmin: pg_sys::TransactionId) -> bool {
    unsafe { pg_sys::TransactionIdIsCurrentTransactionId(row_xmin) }
}

/// SQL: softfk.depend_on_extension(trigger oid) RETURNS void
/// Records `trigger` -> extension as an automatic dependency, once, and only for a
/// trigger pg_softfk puts on user tables (a check trigger, or a parent's capture trigger):
/// anyone may call it, so it ties nothing else.
#[pg_extern(sql = false)]
fn depend_on_extension(trigger: pg_sys::Oid) {
    let is_untied_softfk_trigger = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
                SELECT FROM pg_catalog.pg_trigger t
                 WHERE t.oid = $1
                   AND t.tgfoid IN ('softfk.check_key()'::pg_catalog.regprocedure,
                                    'softfk.capture_deleted_keys()'::pg_catalog.regprocedure))
            AND NOT EXISTS (
                SELECT FROM pg_catalog.pg_depend d
                 WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objid = $1
                   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass)",
        &[trigger.into()],
    )
    .expect("reading pg_trigger")
    .unwrap_or(false);
    if !is_untied_softfk_trigger {
        return;
    }
    unsafe {
        let extension = pg_sys::get_extension_oid(c"pg_softfk".as_ptr(), false);
        let trigger = pg_sys::ObjectAddress {
            classId: pg_sys::TriggerRelationId,
            objectId: trigger,
            objectSubId: 0,
        };
        let owner = pg_sys::ObjectAddress {
            classId: pg_sys::ExtensionRelationId,
            objectId: extension,
            objectSubId: 0,
        };
        pg_sys::recordDependencyOn(&trigger, &owner, pg_sys::DependencyType::DEPENDENCY_AUTO);
    }
}
