//! Every `pg_softfk.*` setting, defined in one place. `_PG_init` calls [`define`]; each
//! mechanism reads the statics it needs. Durations carry units (`GUC_UNIT_MS`, `GUC_UNIT_S`,
//! memory `GUC_UNIT_KB`), so `SET pg_softfk.lock_timeout = '2s'` works as for core's settings.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

// The check (src/check/).

/// `pg_softfk.check_dedup_memory`, in kB.
pub static CHECK_DEDUP_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(16 * 1024);

// The report (src/report.rs).

/// `pg_softfk.orphans_on_add`: whether softfk_add counts the orphans a column already has.
pub static ORPHANS_ON_ADD: GucSetting<bool> = GucSetting::<bool>::new(true);

// The purge (src/purge/).

/// `pg_softfk.keys_per_batch`.
pub static KEYS_PER_BATCH: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_softfk.rows_per_statement`.
pub static ROWS_PER_STATEMENT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// `pg_softfk.scan_threshold`, in keys; 0 is never.
pub static SCAN_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(20_000);
/// `pg_softfk.batch_delay`, in milliseconds.
pub static BATCH_DELAY: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_softfk.lock_timeout`, in milliseconds.
pub static LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_softfk.statement_timeout`, in milliseconds.
pub static STATEMENT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);
/// `pg_softfk.purge_on_subscriber`: whether the purge runs in a database that subscribes to
/// logical replication.
pub static PURGE_ON_SUBSCRIBER: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_softfk.child_search_path`: the search_path child triggers see during a purge
/// statement; empty: the pinned one.
pub static CHILD_SEARCH_PATH: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));

// The background workers (src/worker/).

/// `pg_softfk.purge_worker`.
pub static PURGE_WORKER: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_softfk.naptime`, in milliseconds.
pub static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_softfk.sweep_interval`, in seconds; 0 is off.
pub static SWEEP_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_softfk.max_purge_workers`: purge workers running at once, across all databases.
pub static MAX_PURGE_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// `pg_softfk.worker_idle_timeout`, in milliseconds.
pub static WORKER_IDLE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(2000);

// Following a key column's type change (src/key_type.rs).

/// `pg_softfk.released_tables`: the tables whose key-column triggers came off for the ALTER
/// TABLE in progress, as a comma-separated list of oids, for softfk.follow_column_renames at
/// its end. Superuser-only and hidden: no role may make the end of its own ALTER TABLE
/// re-sync other tables.
pub static RELEASED_TABLES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Define every setting, then reserve the prefix (a misspelt `pg_softfk.*` is an error, as
/// for core's own settings). Called from `_PG_init`.
pub fn define() {
    GucRegistry::define_int_guc(
        c"pg_softfk.check_dedup_memory",
        c"Memory a backend may use to run one check per distinct key instead of one per row.",
        c"Per transaction: the set of child keys whose check is already queued may use this \
          much, plus what the events it spared would have used. 0 keeps only the latter.",
        &CHECK_DEDUP_MEMORY,
        0,
        i32::MAX / 1024,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_bool_guc(
        c"pg_softfk.orphans_on_add",
        c"Whether softfk_add counts the orphans a column already has.",
        c"One scan of the child table, reported as a NOTICE; skipped when a validated foreign key \
          covers the column. Turn it off to register a column of a very large table at once.",
        &ORPHANS_ON_ADD,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.keys_per_batch",
        c"Deleted parent keys the purge handles per transaction.",
        c"Each batch purges the child rows of at most this many keys, then commits. A queue row \
          holds at most 1000; a batch merges whole rows up to this many. Larger batches drain a \
          mass deletion faster and hold their child rows' locks longer.",
        &KEYS_PER_BATCH,
        1,
        100_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.rows_per_statement",
        c"About how many child rows one purge statement deletes, nulls or archives.",
        c"A batch's keys are split into statements by the child column's statistics. A key \
          with more rows (a bot account's) is purged this many rows per batch, taking turns \
          with the keys queued after it. A TRUNCATE or sweep takes this many keys per statement.",
        &ROWS_PER_STATEMENT,
        1,
        100_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.scan_threshold",
        c"Deleted keys from which the purge's first pass reads each child once, in physical order.",
        c"When at least this many keys of one parent column wait for their first pass, they \
          are purged together by reading each child in block ranges (about \
          rows_per_statement matching rows, and at least twice as many rows as keys), as a \
          hand-written DELETE ... USING does, rather than key by key through the child's \
          index. 0 never does.",
        &SCAN_THRESHOLD,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.batch_delay",
        c"How long the purge worker pauses after each batch.",
        c"Trades drain speed for the application's: during a large backlog, each pause leaves \
          the machine to the foreground. 0 purges at full speed.",
        &BATCH_DELAY,
        0,
        10_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.lock_timeout",
        c"How long a purge statement waits for a child row locked by another transaction.",
        c"On timeout the batch is rolled back and retried with fewer keys. 0 waits forever.",
        &LOCK_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.statement_timeout",
        c"How long one purge statement of the worker may run.",
        c"On timeout the batch is rolled back and retried with fewer keys. 0 means no limit. \
          softfk_purge() is bounded by the session's statement_timeout instead.",
        &STATEMENT_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"pg_softfk.purge_on_subscriber",
        c"Whether the purge runs in a database that subscribes to logical replication.",
        c"Off (the default): a subscriber receives the publisher's purge as replicated changes, \
          and its own would write queue, run-log and archive rows whose ids collide with \
          replicated ones, stopping the subscription. Turn it on only where the softfk tables \
          are not replicated.",
        &PURGE_ON_SUBSCRIBER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_softfk.child_search_path",
        c"The search_path a purge statement runs with, for the child's triggers.",
        c"Empty (the default): pg_catalog, pg_temp, as all of pg_softfk's queries. Set it (for \
          example to '\"$user\", public') when triggers on child tables name tables or functions \
          without a schema and have no SET search_path of their own. pg_softfk's statements \
          name everything with its schema, so only those triggers see the difference.",
        &CHILD_SEARCH_PATH,
        // Superusers only: it decides what the child owner's triggers resolve.
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_softfk.purge_worker",
        c"Whether the background worker purges the queue.",
        c"Off: the worker leaves the queue alone (softfk_purge() still runs the purge).",
        &PURGE_WORKER,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.max_purge_workers",
        c"How many purge workers may run at once, across all databases.",
        c"Each takes a background worker slot (max_worker_processes, shared with parallel \
          query and logical replication). Databases with work beyond them wait their turn; \
          a worker that has served one database for 5 s makes room for one that waits.",
        &MAX_PURGE_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.worker_idle_timeout",
        c"How long a purge worker stays in a database with nothing to purge before it leaves.",
        c"A worker holds a database only while it has work: once it leaves, DROP DATABASE and \
          CREATE DATABASE ... TEMPLATE of it need not wait, and the next deleting commit \
          starts a worker again (a few milliseconds).",
        &WORKER_IDLE_TIMEOUT,
        0,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.naptime",
        c"How long the purge worker sleeps when it is not woken.",
        c"A deleting commit wakes the worker at once; the naptime paces final passes, sweeps \
          and the launcher's look for new databases.",
        &NAPTIME,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_softfk.sweep_interval",
        c"How often the purge worker looks for orphans the capture did not see. 0 turns it off.",
        c"A sweep queues every parent for a full anti-join (the orphan_report() query), which \
          then purges like a TRUNCATE.",
        &SWEEP_INTERVAL,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"pg_softfk.released_tables",
        c"Internal: tables whose key-column triggers the ALTER TABLE in progress took off.",
        c"Set by pg_softfk for the rest of the transaction; not meant to be set by hand.",
        &RELEASED_TABLES,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL | GucFlags::DISALLOW_IN_FILE | GucFlags::NO_RESET_ALL,
    );
    // SAFETY: called from _PG_init, after the settings above were defined.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pg_softfk".as_ptr()) };
}
