//! pg_softfk: soft foreign keys for PostgreSQL — referential integrity for a hot parent table
//! (a users table) without the row locks of native foreign keys.
//!
//! This file only wires the modules together (docs/design.md draws the layers and says where
//! to find what). The SQL surface is declared by hand in `sql/`, one file per mechanism.

::pgrx::pg_module_magic!();

// Layers, lowest first; a module names only modules of lower layers (src/layers.rs checks).
// 1. PostgreSQL glue, knowing nothing about soft references.
mod postgres;
// 2. The catalog (registrations, the query builder) and every pg_softfk.* setting.
mod catalog;
mod settings;
// 3. The mechanisms.
mod adopt;
mod capture;
mod check;
mod key_type;
mod purge;
mod report;
mod worker;
// 4. The SQL API.
mod api;

#[cfg(test)]
mod layers;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Runs when a backend (or, with shared_preload_libraries, the postmaster) loads the library.
#[::pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::define();
    worker::init();
}

// Internal tables, event triggers and helpers first; the API (functions, views) last.
::pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
::pgrx::extension_sql_file!("../sql/check.sql", name = "check", requires = ["bootstrap"]);
::pgrx::extension_sql_file!("../sql/purge.sql", name = "purge", requires = ["check"]);
::pgrx::extension_sql_file!("../sql/capture.sql", name = "capture", requires = ["purge"]);
::pgrx::extension_sql_file!("../sql/adopt.sql", name = "adopt", requires = ["capture"]);
::pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The test cluster's settings: `[test_cluster]` of pgrx.toml, as script/lib.sh (the one
    /// reader of pgrx.toml) writes them for every throwaway cluster; script/test passes the
    /// file in `SOFTFK_CLUSTER_CONF`.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let path = std::env::var("SOFTFK_CLUSTER_CONF").expect(
            "SOFTFK_CLUSTER_CONF is not set: run the tests with `bash script/test`, which writes \
             the test cluster's settings from pgrx.toml",
        );
        let settings = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        settings
            .lines()
            .filter(|line| line.contains('='))
            .map(|line| &*Box::leak(line.to_string().into_boxed_str()))
            .collect()
    }
}
