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
mod plan;

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::catalog::reference::Validate;
use crate::postgres::error::error;
use crate::postgres::fmgr::function_info_v1;
use pending::KeyBytes;
use plan::{KeyType, Plan};

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
/// transaction are still queued on the child (core would fail them at COMMIT with "could not
/// find trigger"), as ALTER TABLE refuses a table with pending trigger events.
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

// (The two functions below take `fcinfo` directly: a trigger, and a WHEN-clause helper that
// caches in `fn_extra`.)
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

function_info_v1!(pg_finfo_softfk_key_needs_check);

/// SQL: softfk.key_needs_check(reference bigint, key anyelement) RETURNS boolean STRICT.
/// Runs for every written row, so the key type's length is looked up once per trigger and
/// kept in the call's `fn_extra`.
///
/// # Safety
/// Called by PostgreSQL's function manager, with its `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_key_needs_check(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: called with two arguments, a bigint and the key of the type get_fn_expr_argtype
    // reports; fn_extra belongs to this call site, allocated in its fn_mcxt.
    unsafe {
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
}

/// SQL: softfk.written_by_this_transaction(row_xmin xid) RETURNS boolean
#[pg_extern(sql = false)]
fn written_by_this_transaction(row_xmin: pg_sys::TransactionId) -> bool {
    // SAFETY: looks the id up in this transaction's own state; any id is a valid argument.
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
