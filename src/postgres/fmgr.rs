//! PostgreSQL's function manager glue for C functions that take `fcinfo` directly (triggers,
//! event triggers, functions caching in `fn_extra`), which `#[pg_extern]` does not write.

/// `PG_FUNCTION_INFO_V1`: the record PostgreSQL looks up before calling a C function by name.
macro_rules! function_info_v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

pub(crate) use function_info_v1;
