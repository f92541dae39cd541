//! PostgreSQL glue: the pieces of the server pg_softfk needs, wrapped once, knowing nothing
//! about soft references. Everything above this layer reaches PostgreSQL through here or
//! through pgrx directly; nothing here names a module above it.
//!
//! | module         | what it wraps                                                         |
//! |----------------|-----------------------------------------------------------------------|
//! | [`error`]      | `ereport`: errors, warnings and notices with a SQLSTATE, DETAIL, HINT  |
//! | [`event_trigger`] | an event trigger's parse tree, lists of nodes                      |
//! | [`fmgr`]       | `PG_FUNCTION_INFO_V1` for C functions that take `fcinfo` themselves   |
//! | [`guc`]        | running code under settings that are thrown away afterwards           |
//! | [`process`]    | facts about this backend: its database, user, kind, pending SIGTERM   |
//! | [`quote`]      | quoting identifiers and literals into SQL text                        |
//! | [`roles`]      | running code as another role (the extension's or a table's owner)     |
//! | [`scan_count`] | running a query with row instrumentation, counting one table's scans  |
//! | [`spi`]        | read-only SPI queries; result columns read by name                    |
//! | [`timeout`]    | the statement timeout, armed around one statement                     |
//! | [`transaction`]| transactions and subtransactions run from Rust; end-of-transaction    |
//! |                | callbacks behind one registration                                     |

pub mod error;
pub mod event_trigger;
pub mod fmgr;
pub mod guc;
pub mod process;
pub mod quote;
pub mod roles;
pub mod scan_count;
pub mod spi;
pub mod timeout;
pub mod transaction;
