//! The catalog: what pg_softfk knows about soft references, above the PostgreSQL glue and
//! below the mechanisms.
//!
//! - [`reference`]: a registration (`softfk.reference`) resolved against the catalogs, with
//!   its `on_delete` and `validate` as enums, parsed once.
//! - [`table`]: tables and columns named in an API call, checked as core checks a foreign key's.
//! - [`query`]: the one query builder (orphan rows, purge statements, absent keys, ...).

pub mod query;
pub mod reference;
pub mod table;
