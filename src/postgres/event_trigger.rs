//! Event triggers written in Rust: the statement's parse tree, and its lists of nodes.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::error::error;

/// The parse tree of the statement an event trigger fires for (`ddl_command_start`: before
/// PostgreSQL runs it). Raises 39P03 when `fcinfo` is not an event trigger's call.
///
/// # Safety
/// `fcinfo` is the call's own, from PostgreSQL's function manager. The tree lives for the call.
pub unsafe fn parse_tree(fcinfo: pg_sys::FunctionCallInfo, function: &str) -> *mut pg_sys::Node {
    // SAFETY: an event trigger's context is an EventTriggerData, checked by its node tag
    // before it is read.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            error(
                PgSqlErrorCode::ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
                format!("{function} must be called as an event trigger"),
            )
            .raise();
        }
        (*(context as *mut pg_sys::EventTriggerData)).parsetree
    }
}

/// The pointers of a `List` of nodes.
///
/// # Safety
/// `list` is a pointer List of nodes, or NULL, alive while the iterator is used.
pub unsafe fn list_nodes(list: *mut pg_sys::List) -> impl Iterator<Item = *mut pg_sys::Node> {
    // SAFETY: the caller passes a pointer List or NULL.
    unsafe {
        let length = if list.is_null() {
            0
        } else {
            (*list).length as usize
        };
        // SAFETY: a pointer List of `length` cells, alive while the caller says.
        (0..length).map(move |i| (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node)
    }
}

/// The names in a `List` of String nodes (a DROP statement's objects, for schemas or
/// extensions); other nodes are skipped.
///
/// # Safety
/// As [`list_nodes`].
pub unsafe fn list_names(list: *mut pg_sys::List) -> Vec<String> {
    // SAFETY: each node is read as a String only when its tag says so; sval is a
    // NUL-terminated string.
    unsafe {
        list_nodes(list)
            .filter(|&node| !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_String)
            .map(|node| {
                CStr::from_ptr((*(node as *mut pg_sys::String)).sval)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}
