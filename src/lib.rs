//! pg_softfk: soft foreign keys for PostgreSQL — referential integrity for a hot parent table
//! (a users table) without the row locks of native foreign keys.
//!
//! This file only wires the modules together. The SQL surface is declared by hand in `sql/`
//! (types, defaults and documentation comments in one place); each capability is one module.

::pgrx::pg_module_magic!();

mod adopt;
mod capture;
mod check;
mod error;
mod fmgr;
mod key_type;
mod purge;
mod registry;
mod report;
mod scan_count;
mod settings;
mod worker;

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Runs when a backend (or, with shared_preload_libraries, the postmaster) loads the library.
#[::pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    check::define_settings();
    purge::define_settings();
    report::define_settings();
    key_type::define_settings();
    worker::init();
    unsafe { ::pgrx::pg_sys::MarkGUCPrefixReserved(c"pg_softfk".as_ptr()) };
}

// Internal tables, event triggers and helpers first; the API (functions, views) last.
::pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
::pgrx::extension_sql_file!("../sql/check.sql", name = "check", requires = ["bootstrap"]);
::pgrx::extension_sql_file!("../sql/purge.sql", name = "purge", requires = ["check"]);
::pgrx::extension_sql_file!("../sql/adopt.sql", name = "adopt", requires = ["purge"]);
::pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The test cluster's settings come from `[test_cluster]` in pgrx.toml, the file the
    /// scripts read too.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        include_str!("../pgrx.toml")
            .lines()
            .skip_while(|line| line.trim() != "[test_cluster]")
            .skip(1)
            .take_while(|line| !line.trim_start().starts_with('['))
            .filter(|line| line.contains('=') && !line.trim_start().starts_with('#'))
            .map(|line| {
                let (key, value) = line.split_once('=').unwrap();
                let setting = format!("{} = '{}'", key.trim(), value.trim().trim_matches('"'));
                &*Box::leak(setting.into_boxed_str())
            })
            .collect()
    }
}
