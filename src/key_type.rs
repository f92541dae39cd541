//! `ALTER TABLE ... ALTER COLUMN ... TYPE` of a registered key column: the most common
//! migration of a users table (`id` integer -> bigint, then every column referencing it).
//!
//! PostgreSQL refuses to change the type of a column a trigger's definition uses, and the
//! parent's capture trigger (`AFTER UPDATE OF id ... WHEN (OLD.id IS DISTINCT FROM NEW.id)`)
//! and the child's check triggers (`WHEN (... NEW.user_id ...)`) do. So, as the statement
//! starts (an event trigger on `ddl_command_start`, the only point before PostgreSQL looks at
//! those dependencies), pg_softfk takes off the triggers that name the column; when it ends
//! (`softfk.follow_column_renames`, on `ddl_command_end`), it puts them back, refusing the
//! change — and so undoing all of it — if a checked reference could no longer compare its
//! keys. Everything happens inside the ALTER's transaction: if the ALTER fails, the
//! triggers were never gone.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::postgres::event_trigger::{list_nodes, parse_tree};
use crate::postgres::fmgr::function_info_v1;
use crate::postgres::guc::set_for_transaction;
use crate::postgres::roles::{self, as_extension_owner};
use crate::settings::RELEASED_TABLES;

function_info_v1!(pg_finfo_softfk_before_alter_table);

/// SQL: softfk.before_alter_table() RETURNS event_trigger, on `ddl_command_start` of
/// `ALTER TABLE`.
///
/// # Safety
/// Called by PostgreSQL's function manager, with its `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_before_alter_table(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is this call's; for ALTER TABLE the parse tree is an AlterTableStmt
    // (checked by its tag), whose commands are a List of AlterTableCmd, alive for the call.
    unsafe {
        let tree = parse_tree(fcinfo, "softfk.before_alter_table()");
        if tree.is_null() || (*tree).type_ != pg_sys::NodeTag::T_AlterTableStmt {
            return pg_sys::Datum::from(0);
        }
        let statement = &*(tree as *mut pg_sys::AlterTableStmt);
        let columns: Vec<String> = list_nodes(statement.cmds)
            .filter_map(|node| {
                let command = &*(node as *mut pg_sys::AlterTableCmd);
                let changes_type = (*node).type_ == pg_sys::NodeTag::T_AlterTableCmd
                    && command.subtype == pg_sys::AlterTableType::AT_AlterColumnType
                    && !command.name.is_null();
                changes_type.then(|| CStr::from_ptr(command.name).to_string_lossy().into_owned())
            })
            .collect();
        if columns.is_empty() || statement.relation.is_null() {
            return pg_sys::Datum::from(0);
        }
        let table = pg_sys::RangeVarGetRelidExtended(
            statement.relation,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        );
        // Only for the table's owner, who may alter it; anyone else's ALTER fails on its own, and
        // must not get pg_softfk to drop triggers first.
        if table == pg_sys::InvalidOid || !roles::current_user_owns(table) {
            return pg_sys::Datum::from(0);
        }
        for column in &columns {
            as_extension_owner(|| {
                Spi::run_with_args(
                    "SELECT softfk.release_key_column($1, $2)",
                    &[table.into(), column.as_str().into()],
                )
                .expect("taking off the triggers on a key column")
            });
        }
        // For softfk.follow_column_renames at the end of this ALTER TABLE: which tables to put
        // triggers back on. Local to the transaction (and set outside as_extension_owner, whose
        // settings end with it), so that a failed ALTER leaves nothing behind.
        let mut released: Vec<String> = RELEASED_TABLES
            .get()
            .map(|list| {
                list.to_string_lossy()
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        released.push(table.to_u32().to_string());
        set_for_transaction(c"pg_softfk.released_tables", &released.join(","));
        pg_sys::Datum::from(0)
    }
}
