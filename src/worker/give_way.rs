//! A purge worker gives way to the commands that need a database without connections, as
//! core's autovacuum workers do: `DROP DATABASE`, `CREATE DATABASE ... TEMPLATE`, `ALTER
//! DATABASE ... RENAME TO` and `ALTER DATABASE ... SET TABLESPACE`. Those commands wait up to
//! 5 seconds for other sessions to leave and then fail ("database ... is being accessed by
//! other users"), and only autovacuum workers are asked to go.
//!
//! So, in the session running one of them (a ProcessUtility hook, present in every backend
//! since the library is preloaded), before the command: if the database's owner (or a
//! superuser) runs it, the database is held off for [`HOLD_OFF`] (the launcher starts no
//! worker there) and a connected worker is sent SIGTERM: its batch rolls back and is redone
//! later, as after any interruption; the command waits until it has left. After the command
//! succeeds the hold is lifted at once (unless another session's command holds it longer).
//! A role that does not own the database cannot use these commands to push the worker out.
//!
//! The same hook wakes the database after `COMMIT PREPARED`: a prepared transaction's
//! deletions commit there, not in the session that made them.

use std::ffi::CStr;
use std::sync::OnceLock;
use std::time::Duration;

use pgrx::prelude::*;
use pgrx::PgList;

use super::shared::{now, SHARED};
use crate::postgres::process;

/// How long a database is held off when the command fails before it could lift the hold.
const HOLD_OFF: Duration = Duration::from_secs(10);

static PREVIOUS: OnceLock<pg_sys::ProcessUtility_hook_type> = OnceLock::new();

/// Called from _PG_init while shared_preload_libraries loads.
pub fn init() {
    // SAFETY: hooks are installed in _PG_init, in the postmaster, before any backend starts;
    // the previous hook is kept and called, as every hook must.
    unsafe {
        let _ = PREVIOUS.set(pg_sys::ProcessUtility_hook);
        pg_sys::ProcessUtility_hook = Some(give_way_then_run);
    }
}

// The hook itself is not guarded: the command it runs raises its errors (longjmp) straight
// through it to whoever catches them, with every field core gave them (a guard would turn
// them into Rust panics and report them again, without their CONTEXT, schema, table or
// constraint). It holds nothing that needs dropping while the command runs; its Rust work
// happens in the guarded functions it calls before and after.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn give_way_then_run(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: pstmt is the utility statement core is about to run, its node tree valid; the
    // arguments are passed on unchanged to the previous hook or to core.
    unsafe {
        let database = before((*pstmt).utilityStmt);
        match PREVIOUS.get().copied().flatten() {
            Some(previous) => previous(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
        after(database, (*pstmt).utilityStmt);
    }
}

// Core's ProcessUtility, unguarded (pgrx's binding is guarded; see above).
extern "C-unwind" {
    #[allow(clippy::too_many_arguments)]
    fn standard_ProcessUtility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// Before the command: hold its database off and send its worker away. Returns the database
/// (InvalidOid: none).
#[pg_guard]
unsafe extern "C-unwind" fn before(statement: *mut pg_sys::Node) -> pg_sys::Oid {
    // SAFETY: statement is the command's utility statement.
    match unsafe { database_needed_alone(statement) } {
        Some(database) => {
            hold_off(database);
            database
        }
        None => pg_sys::InvalidOid,
    }
}

/// After the command succeeded: lift this session's hold (one another session set since
/// stays), and wake the database after COMMIT PREPARED (the prepared transaction's deletions
/// were not committed by a session that could wake it).
#[pg_guard]
unsafe extern "C-unwind" fn after(database: pg_sys::Oid, statement: *mut pg_sys::Node) {
    if database != pg_sys::InvalidOid {
        lift_hold(database);
    }
    // SAFETY: statement is the command's utility statement, read by its tag.
    let commit_prepared = unsafe {
        !statement.is_null()
            && (*statement).type_ == pg_sys::NodeTag::T_TransactionStmt
            && (*(statement as *mut pg_sys::TransactionStmt)).kind
                == pg_sys::TransactionStmtKind::TRANS_STMT_COMMIT_PREPARED
    };
    if commit_prepared {
        super::shared::wake_database();
    }
}

/// The database `statement` needs without connections, when the current user may run it.
///
/// # Safety
/// `statement` is a valid utility statement node (or null).
unsafe fn database_needed_alone(statement: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    if statement.is_null() {
        return None;
    }
    // SAFETY: each cast follows the node's own tag; the names are NUL-terminated strings of
    // the parse tree, and options are lists of DefElem.
    let name = unsafe {
        match (*statement).type_ {
            pg_sys::NodeTag::T_DropdbStmt => (*(statement as *mut pg_sys::DropdbStmt)).dbname,
            pg_sys::NodeTag::T_CreatedbStmt => {
                let options = (*(statement as *mut pg_sys::CreatedbStmt)).options;
                // (TEMPLATE DEFAULT has no argument: template1, never joined.)
                option(options, c"template")
                    .filter(|&o| !(*o).arg.is_null())
                    .map(|o| pg_sys::defGetString(o))
                    .unwrap_or(std::ptr::null_mut())
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let rename = statement as *mut pg_sys::RenameStmt;
                if (*rename).renameType == pg_sys::ObjectType::OBJECT_DATABASE {
                    (*rename).subname
                } else {
                    std::ptr::null_mut()
                }
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let alter = statement as *mut pg_sys::AlterDatabaseStmt;
                if option((*alter).options, c"tablespace").is_some() {
                    (*alter).dbname
                } else {
                    std::ptr::null_mut()
                }
            }
            _ => std::ptr::null_mut(),
        }
    };
    if name.is_null() {
        return None;
    }
    // SAFETY: name is a NUL-terminated database name; the lookups read the catalogs.
    unsafe {
        let database = pg_sys::get_database_oid(name, true);
        if database == pg_sys::InvalidOid {
            return None;
        }
        let user = pg_sys::GetUserId();
        #[cfg(feature = "pg15")]
        let owner = pg_sys::pg_database_ownercheck(database, user);
        #[cfg(not(feature = "pg15"))]
        let owner = pg_sys::object_ownercheck(pg_sys::DatabaseRelationId, database, user);
        owner.then_some(database)
    }
}

/// The option named `name` in a list of DefElem.
///
/// # Safety
/// `options` is a List of DefElem (or NIL).
unsafe fn option(options: *mut pg_sys::List, name: &CStr) -> Option<*mut pg_sys::DefElem> {
    // SAFETY: a List of DefElem pointers, each with a NUL-terminated name.
    unsafe {
        PgList::<pg_sys::DefElem>::from_pg(options)
            .iter_ptr()
            .find(|&o| CStr::from_ptr((*o).defname) == name)
    }
}

thread_local! {
    /// The hold this session set, to lift after its command.
    static MY_HOLD: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Hold `database` off and send its connected worker SIGTERM, then wait (up to 5 s) until it
/// has left: `DROP DATABASE ... WITH (FORCE)` by an owner who is not a superuser could not
/// terminate it itself.
fn hold_off(database: pg_sys::Oid) {
    let sent_to = {
        let mut shared = SHARED.exclusive();
        let Some(slot) = shared.slot_of(database.to_u32()) else {
            return;
        };
        let until = now() + HOLD_OFF.as_micros() as i64;
        slot.held_off_until = slot.held_off_until.max(until);
        MY_HOLD.set(until);
        if slot.pid == 0 || slot.pid == process::pid() {
            return;
        }
        log!(
            "pg_softfk: the purge worker (PID {}) leaves database {} for a command that needs it without connections",
            slot.pid,
            database.to_u32()
        );
        // SAFETY: kill(2) of the PID the worker wrote into its slot. Sent under the lock: a
        // worker clears its PID under the same lock before it exits, so the process is still
        // that worker. It exits as on any SIGTERM (src/worker/mod.rs).
        unsafe {
            libc::kill(slot.pid, libc::SIGTERM);
        }
        slot.pid
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline
        && SHARED
            .share()
            .find(database.to_u32())
            .is_some_and(|s| s.pid == sent_to)
    {
        // SAFETY: a short sleep, then this backend's own interrupts (a cancel ends the wait).
        unsafe {
            pg_sys::pg_usleep(10_000);
            pg_sys::check_for_interrupts!();
        }
    }
}

fn lift_hold(database: pg_sys::Oid) {
    let launcher = {
        let mut shared = SHARED.exclusive();
        if let Some(slot) = shared.slot_of(database.to_u32()) {
            if slot.held_off_until == MY_HOLD.get() {
                slot.held_off_until = 0;
            }
        }
        shared.launcher_procno
    };
    MY_HOLD.set(0);
    super::shared::set_latch(launcher);
}
