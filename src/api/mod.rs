//! The SQL API: the functions users call, each declared by hand in sql/api.sql (types,
//! defaults, documentation comments) and implemented here by orchestrating the mechanisms.
//! Functions pg_softfk's own SQL and triggers call (`softfk.check_key`, `softfk.absent_keys`,
//! ...) live with their mechanism.
//!
//! - [`registration`]: `softfk_add`, `softfk_alter`, `softfk_drop`.
//! - [`report`]: `orphan_report()`, and the query behind `orphan_rows()`.
//! - [`purge`]: `softfk_purge()`, `softfk_restore()`.
//!
//! (`softfk_discover`, `softfk_adopt` and `softfk_revert` are SQL, in sql/adopt.sql.)

mod purge;
mod registration;
mod report;
