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
//! come from core's after-trigger queue. They have no WHEN clause: core would parse it again
//! for every statement, a cost each single-row write paid (BENCHMARKS.md). Instead
//! each event decides when it fires: an UPDATE that kept its key is done at once (unless the
//! row was written earlier in the transaction), and a key that an earlier event of the same
//! batch found in the parent is not probed again ([`verified`]).

mod plan;
mod verified;

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::catalog::reference::Validate;
use crate::postgres::error::error;
use crate::postgres::fmgr::function_info_v1;
use plan::{KeyType, Plan};
use verified::KeyBytes;

/// Install the check triggers of a reference for `validate` ('off' installs none).
pub fn install(reference: i64, child: pg_sys::Oid, child_column: &str, validate: Validate) {
    Spi::run_with_args(
        "SELECT softfk.install_check($1, $2, $3, $4)",
        &[
            reference.into(),
            child.into(),
            child_column.into(),
            validate.as_str().into(),
        ],
    )
    .expect("installing the check triggers");
}

/// Remove the check triggers of a reference, wherever they are. Refused while checks of this
/// transaction are still queued on the child (core would silently drop them with their
/// trigger, and let an orphan through), as ALTER TABLE refuses a table with pending trigger
/// events.
pub fn remove(reference: i64, child: pg_sys::Oid) {
    // SAFETY: reads this transaction's after-trigger queue.
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

/// A key's bytes, for the pending-check set.
///
/// # Safety
/// `key` is a datum of a type with `key_type`'s length and by-value flag, valid for the call.
unsafe fn key_bytes(key: pg_sys::Datum, key_type: KeyType) -> KeyBytes {
    // SAFETY: the caller's datum matches `key_type`: a varlena is detoasted, a cstring
    // is NUL-terminated, a fixed-length value has `length` bytes.
    unsafe {
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
}

/// The key column of the row in `slot`, or None when it is NULL.
///
/// # Safety
/// `slot` holds a row of the table the plan was made for.
unsafe fn key_of(slot: *mut pg_sys::TupleTableSlot, plan: &Plan) -> Option<pg_sys::Datum> {
    let mut is_null = false;
    // SAFETY: the plan's attnum is a column of the slot's table.
    let key = unsafe { pg_sys::slot_getattr(slot, plan.attnum.into(), &mut is_null) };
    (!is_null).then_some(key)
}

/// Was the row version in `slot` written by this transaction (or one of its
/// subtransactions)?
///
/// # Safety
/// `slot` holds a heap row version fetched from its table.
unsafe fn row_written_by_this_transaction(slot: *mut pg_sys::TupleTableSlot) -> bool {
    let mut is_null = false;
    // SAFETY: reads the slot's xmin system column.
    let xmin = unsafe {
        pg_sys::slot_getsysattr(slot, pg_sys::MinTransactionIdAttributeNumber, &mut is_null)
    };
    !is_null && written_by_this_transaction(pg_sys::TransactionId::from_inner(xmin.value() as u32))
}

fn reference_argument(trigger: &pg_sys::Trigger) -> i64 {
    let argument = (trigger.tgnargs == 1)
        // SAFETY: with tgnargs == 1, tgargs points to one NUL-terminated string, alive as
        // long as the trigger.
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

// (A trigger, which keeps its batch in `fn_extra`: it takes `fcinfo` directly.)
function_info_v1!(pg_finfo_softfk_check_key);

/// SQL: softfk.check_key() RETURNS trigger — AFTER INSERT / UPDATE, FOR EACH ROW, one argument:
/// the reference id.
///
/// # Safety
/// Called by PostgreSQL's function manager, with its `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_check_key(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: a trigger call's context is a TriggerData (checked before it is read), whose
    // relation, trigger and slots are valid for the call.
    unsafe {
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
        let updating = trigger_fired_by_update(data.tg_event);
        let slot = if updating {
            data.tg_newslot
        } else {
            data.tg_trigslot
        };
        let reference = reference_argument(&*data.tg_trigger);
        let relation = data.tg_relation;
        let plan = Plan::get(reference, (*relation).rd_id);

        let Some(key) = key_of(slot, &plan) else {
            return pg_sys::Datum::from(0); // NULL passes (MATCH SIMPLE)
        };
        let key_bytes = key_bytes(key, plan.key_type);
        if updating
            && key_of(data.tg_trigslot, &plan)
                .is_some_and(|old| key_bytes == self::key_bytes(old, plan.key_type))
            && !row_written_by_this_transaction(data.tg_trigslot)
        {
            // The key did not change, and was checked when the row was written (core's
            // RI_FKey_fk_upd_check_required). A row written earlier in this transaction is
            // checked again: its own check may have run already, before the parent went.
            return pg_sys::Datum::from(0);
        }
        let batch = verified::batch_of((*fcinfo).flinfo);
        if verified::already_found(batch, &key_bytes) {
            return pg_sys::Datum::from(0);
        }
        // Core's rule: a row deleted or updated again since this event was queued is not
        // checked here (its newer version has its own event, or is gone).
        if !pg_sys::table_tuple_satisfies_snapshot(
            relation,
            slot,
            &raw mut pg_sys::SnapshotSelfData,
        ) {
            return pg_sys::Datum::from(0);
        }
        if plan.parent_has(key) {
            verified::found(batch, key_bytes);
            return pg_sys::Datum::from(0);
        }
        let key_text = plan.key_text(key);
        let table_name = CStr::from_ptr((*(*data.tg_relation).rd_rel).relname.data.as_ptr());
        let schema_name = CStr::from_ptr(pg_sys::get_namespace_name(
            (*(*data.tg_relation).rd_rel).relnamespace,
        ));
        // The constraint is the firing check trigger, the name SET CONSTRAINTS takes.
        let constraint_name = CStr::from_ptr((*data.tg_trigger).tgname);
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
        .raise_on_constraint(
            &schema_name.to_string_lossy(),
            &table_name.to_string_lossy(),
            &constraint_name.to_string_lossy(),
        )
    }
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
    // SAFETY: records a dependency between two objects that exist (the trigger was just read,
    // the extension is the one running), with addresses alive during the call.
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

// The WHEN-clause functions of versions 0.1.0 to 0.4.0, whose check triggers a database keeps
// until `ALTER EXTENSION pg_softfk UPDATE` re-creates them (and whose install scripts name
// these symbols). Every row they let through is checked by `check_key`, which finds repeated
// keys itself now.

function_info_v1!(pg_finfo_softfk_key_needs_check);

/// SQL (before 0.5.0): softfk.key_needs_check(reference bigint, key anyelement) RETURNS
/// boolean STRICT: always true.
///
/// # Safety
/// Called by PostgreSQL's function manager; reads nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn softfk_key_needs_check(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    pg_sys::Datum::from(true)
}

/// SQL (before 0.5.0): softfk.written_by_this_transaction(row_xmin xid) RETURNS boolean; also
/// what `check_key` asks of an UPDATE's old row version.
#[pg_extern(sql = false)]
fn written_by_this_transaction(row_xmin: pg_sys::TransactionId) -> bool {
    // SAFETY: looks the id up in this transaction's own state; any id is a valid argument.
    unsafe { pg_sys::TransactionIdIsCurrentTransactionId(row_xmin) }
}
