//! One batch: a queue row's keys (or a slice of them) purged in every child that references
//! the parent column, each child leaf by one statement per chunk of keys, as the child's
//! owner, in one transaction.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::archive::archive;
use super::horizon::horizon;
use super::parent_check::ParentCheck;
use super::queue::{self, Entry};
use super::run_lock::worker_still_holds_run_lock;
use super::run_log;
use super::scan;
use super::table_locks::{gave_way_message, give_way, lock_tables, GAVE_WAY};
use super::{in_transaction, Mode, Rows, Touched};
use crate::catalog::query::{Pass, PurgeSql, KEY_TEXT_SETTINGS};
use crate::catalog::reference::{self, OnDelete, Reference, Which};
use crate::catalog::table::{key_lookup, leaf_partitions, Leaf};
use crate::postgres::error::{error, sqlstate};
use crate::postgres::guc::{with_settings, SAFE_SEARCH_PATH};
use crate::postgres::process;
use crate::postgres::roles::{as_extension_owner, as_table_owner};
use crate::postgres::spi::read_one;
use crate::postgres::timeout::StatementTimeout;
use crate::settings::{CHILD_SEARCH_PATH, LOCK_TIMEOUT, ROWS_PER_STATEMENT, STATEMENT_TIMEOUT};

thread_local! {
    /// (queue entry, keys, reference) of the batch in progress, for the error report of a
    /// batch that was rolled back.
    pub static CURRENT: Cell<(i64, i32, i64)> = const { Cell::new((0, 0, 0)) };
    /// When the batch in progress merged later queue rows: the keys of its own entry.
    pub static OWN_KEYS: Cell<Option<i32>> = const { Cell::new(None) };
    /// Whether the batch in progress purges several references.
    pub static MANY_REFERENCES: Cell<bool> = const { Cell::new(false) };
    /// Whether the batch in progress is a final pass.
    pub static FINAL_PASS: Cell<bool> = const { Cell::new(false) };
    /// Whether the batch in progress reads the children in physical order (src/purge/scan.rs).
    pub static SCANNING: Cell<bool> = const { Cell::new(false) };
    /// Per (queue row, reference, leaf) of a whole-table purge: the orphan keys its last
    /// round purged, in this run.
    static LAST_ROUND: RefCell<HashMap<(i64, i64, String), Vec<String>>> =
        RefCell::new(HashMap::new());
}

/// A new run: whole-table purges start with no memory of earlier rounds.
pub fn forget_last_rounds() {
    LAST_ROUND.with_borrow_mut(|last| last.clear());
}

/// What one batch did.
pub struct Batch {
    /// The queue row it took.
    pub entry: i64,
    pub keys: i64,
    /// References that failed and were handed over to queue rows of their own.
    pub failures: Vec<serde_json::Value>,
    pub rows: BTreeMap<i64, Touched>,
}

/// Purge one batch in the current transaction. `None` when no queue row is ready. A large
/// backlog's first pass starts in physical order only when `may_scan`.
pub fn run(
    mode: Mode,
    failed_entries: &[i64],
    keys_for_entry: &BTreeMap<i64, i32>,
    isolated: &BTreeSet<i64>,
    locking_first: &BTreeSet<i64>,
    may_scan: bool,
) -> Option<Batch> {
    CURRENT.set((0, 0, 0));
    OWN_KEYS.set(None);
    MANY_REFERENCES.set(false);
    FINAL_PASS.set(false);
    SCANNING.set(false);
    GAVE_WAY.set(false);
    if !worker_still_holds_run_lock() {
        return None; // another run took over: this one ends
    }
    // Deferred triggers fire at the end of each purge statement, not at COMMIT: only there
    // do they run as the child's owner, with their settings thrown away (purge_reference).
    // (In softfk_purge(), the rest of the caller's transaction checks immediately too, as
    // after SET CONSTRAINTS ALL IMMEDIATE.)
    Spi::run("SET CONSTRAINTS ALL IMMEDIATE").expect("SET CONSTRAINTS ALL IMMEDIATE");
    let (_, horizon_before) = horizon();
    let mut entry = as_extension_owner(|| {
        queue::take_entry(horizon_before, failed_entries, keys_for_entry, may_scan)
    })?;
    entry.locking_first = locking_first.contains(&entry.id);
    // Read after the entry was seen: the deletion has committed, so every transaction that
    // could still commit an orphan of it has an id below `next`.
    let (next, horizon_now) = horizon();
    // Nothing else is running: this pass is the final one. (Not a pass in physical order: a
    // row updated while it runs may move to a page it has read.)
    if !entry.final_pass && entry.starts_pass && entry.scan.is_none() && horizon_now >= next {
        entry.final_pass = true;
    }
    FINAL_PASS.set(entry.final_pass);
    let key_count = entry.keys.as_ref().map_or(0, |k| k.len() as i32);
    CURRENT.set((entry.id, key_count, 0));
    if !entry.merged.is_empty() {
        OWN_KEYS.set(Some(entry.done_after));
    }

    let mut rows = BTreeMap::new();
    let mut failures = Vec::new();
    let mut hit_limit = false;
    let mut unfinished = BTreeSet::new();
    let references: Vec<_> = as_extension_owner(|| {
        reference::load_each(Which::Parent(entry.parent, &entry.parent_column))
    })
    .into_iter()
    .filter(|loaded| match loaded {
        Ok(reference) => reference.on_delete != OnDelete::NoAction,
        Err(unusable) => unusable.on_delete != OnDelete::NoAction,
    })
    .filter(|loaded| {
        entry
            .reference
            .is_none_or(|only| only == Reference::id_of(loaded))
    })
    .collect();
    // A batch whose references failed together before (run(): `isolated`) purges each of them
    // in a subtransaction of its own: one that fails (a trigger refuses, a type changed)
    // hands its keys to queue rows of its own and the others go on. Only then: a
    // subtransaction per reference and batch would, with ~170 references to a users table,
    // overflow the backend's cache of 64 subtransaction ids, and every snapshot in the
    // cluster would read pg_subtrans while the batch runs. Alone, a reference's failure is
    // the batch's, retried with fewer keys and then backed off.
    MANY_REFERENCES.set(references.len() > 1);
    // Every table the batch writes or reads, locked before it reads a row; the worker gives
    // way instead of waiting (src/purge/table_locks.rs).
    let usable: Vec<&Reference> = references.iter().filter_map(|r| r.as_ref().ok()).collect();
    let gave_way = lock_tables(mode, &usable);
    if let Some(position) = entry.scan {
        // A large backlog, each child read in physical order (src/purge/scan.rs), in its first
        // pass and then in its final one. A reference that cannot be purged fails the batch:
        // the pass then goes on key by key (run()), where one failing reference is isolated
        // from the others.
        if let Some(first) = gave_way.first() {
            give_way(&first.table);
        }
        SCANNING.set(true);
        let usable: Vec<&Reference> = references
            .iter()
            .map(|loaded| match loaded {
                Ok(reference) => reference,
                Err(unusable) => unusable.raise(),
            })
            .collect();
        let keys = entry
            .keys
            .as_deref()
            .expect("a physical-order pass has keys");
        let scanned = scan::run(keys, position, &usable, entry.final_pass);
        let complete = scanned.next.is_none();
        as_extension_owner(|| {
            match scanned.next {
                Some(position) => queue::save_scan_position(entry.id, position),
                None => queue::finish_batch(&entry, true, next),
            }
            run_log::add_totals(&scanned.rows);
        });
        return Some(Batch {
            entry: entry.id,
            keys: if complete { key_count.into() } else { 0 },
            rows: scanned.rows,
            failures: Vec::new(),
        });
    }
    let isolate = references.len() > 1 && isolated.contains(&entry.id);
    for loaded in &references {
        let id = Reference::id_of(loaded);
        CURRENT.set((entry.id, key_count, id));
        // Another session holds one of its tables: its keys go to a queue row of their own,
        // which waits a little (run()); the other references go on.
        if let Some(held) = gave_way.iter().find(|held| held.reference == id) {
            let mut handed = hand_over(&entry, id, false, "55P03", &gave_way_message(&held.table));
            handed["gave_way"] = true.into();
            failures.push(handed);
            continue;
        }
        let outcome = match loaded {
            Err(unusable) if isolate => Err((unusable.message.clone(), "42804".to_string())),
            Err(unusable) => unusable.raise(),
            Ok(reference) if isolate => {
                in_transaction(Mode::Function, || purge_reference(reference, &entry)).map_err(
                    |failure| {
                        let code = failure.sql_error_code();
                        let cancelled = code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED;
                        // (A parent key that came back is the whole batch's to retry.)
                        let came_back = code == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE;
                        if cancelled && mode == Mode::Function
                            || came_back
                            || process::termination_requested()
                        {
                            failure.rethrow();
                        }
                        (failure.message(), sqlstate(failure.sql_error_code()))
                    },
                )
            }
            Ok(reference) => Ok(purge_reference(reference, &entry)),
        };
        let purged = match outcome {
            Ok(done) => done,
            Err((message, sqlstate)) => {
                // Rows split from a merged batch are tried again in this run, each alone; a
                // row that failed alone waits (run()).
                let retry_now = !entry.merged.is_empty();
                failures.push(hand_over(&entry, id, retry_now, &sqlstate, &message));
                continue;
            }
        };
        let Ok(reference) = loaded else {
            unreachable!("an unusable reference purges nothing")
        };
        hit_limit |= purged.hit_limit;
        unfinished.extend(purged.unfinished);
        rows.insert(reference.id, Touched::of(reference, purged.rows));
    }
    CURRENT.set((entry.id, key_count, 0));

    // Keys with more rows than a statement purges go on in a queue row of their own, at the
    // back of the queue: the keys queued after them are purged first.
    if !unfinished.is_empty() {
        let moved = as_extension_owner(|| queue::split_off(&entry, &unfinished, next));
        entry.done_after -= moved;
        entry.total_keys -= moved;
    }
    let pass_complete = match &entry.keys {
        Some(_) => entry.done_after >= entry.total_keys,
        None => !hit_limit,
    };
    as_extension_owner(|| {
        queue::finish_batch(&entry, pass_complete, next);
        run_log::add_totals(&rows);
    });
    Some(Batch {
        entry: entry.id,
        keys: key_count.into(),
        rows,
        failures,
    })
}

/// Hand `reference`'s keys of this batch over to queue rows of their own
/// ([`queue::hand_over`]); what the run log records of it.
fn hand_over(
    entry: &Entry,
    reference: i64,
    retry_now: bool,
    sqlstate: &str,
    message: &str,
) -> serde_json::Value {
    let handed_to = as_extension_owner(|| queue::hand_over(entry, reference));
    serde_json::json!({
        "queue_entry": entry.id,
        "handed_over_to": handed_to,
        "retry_now": retry_now,
        "reference": reference,
        "keys": entry.keys.as_ref().map_or(0, Vec::len),
        "sqlstate": sqlstate,
        "message": message,
    })
}

/// The search_path purge statements run with: pg_softfk.child_search_path, or the pinned
/// one when it is empty. pg_temp goes last: otherwise it is searched first, and anyone's
/// temporary type could stand in for a type the statement names.
fn child_search_path() -> String {
    let path = CHILD_SEARCH_PATH
        .get()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if path.trim().is_empty() {
        return SAFE_SEARCH_PATH.1.to_string();
    }
    let mut schemas: Vec<&str> = path
        .split(',')
        .map(str::trim)
        .filter(|schema| !schema.trim_matches('"').eq_ignore_ascii_case("pg_temp"))
        .collect();
    schemas.push("pg_temp");
    schemas.join(", ")
}

/// The settings every purge statement runs with, set for the statement and every setting
/// the child's triggers change thrown away at its end (with_settings): nothing one owner's
/// trigger sets reaches the next statement.
pub(super) struct StatementSettings {
    lock_timeout: String,
    search_path: String,
}

impl StatementSettings {
    pub(super) fn new() -> StatementSettings {
        StatementSettings {
            lock_timeout: LOCK_TIMEOUT.get().to_string(),
            search_path: child_search_path(),
        }
    }

    pub(super) fn apply<R>(&self, f: impl FnOnce() -> R) -> R {
        let [datestyle, intervalstyle, float_digits] = KEY_TEXT_SETTINGS;
        let settings = [
            (c"lock_timeout", self.lock_timeout.as_str()),
            (c"search_path", self.search_path.as_str()),
            datestyle,
            intervalstyle,
            float_digits,
        ];
        with_settings(&settings, f)
    }
}

/// After a purge statement on `leaf`: refuse a statement that made no progress or that lost
/// the run lock, archive what it deleted, and count its rows.
pub(super) fn account(reference: &Reference, leaf: &str, changed: &Changed, rows: &mut Rows) {
    if changed.kept > 0 {
        error(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("purging {leaf} makes no progress: its orphan rows keep their keys"),
        )
        .detail(format!(
            "{} rows set to NULL still hold their key.",
            changed.kept
        ))
        .hint("A trigger on the table may keep the key column as it was.")
        .raise();
    }
    if !worker_still_holds_run_lock() {
        error(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            "the purge run lost its lock to another run while purging this table",
        )
        .detail("A trigger on the child table released the purge worker's advisory locks.")
        .raise();
    }
    match reference.on_delete {
        OnDelete::SetNull => rows.nulled += changed.count,
        OnDelete::Archive => {
            as_extension_owner(|| archive(reference, &changed.archived));
            rows.archived += changed.count;
        }
        OnDelete::Cascade | OnDelete::NoAction => rows.deleted += changed.count,
    }
}

/// What one reference's statements did in a batch.
struct Purged {
    rows: Rows,
    /// A whole-table entry: some statement hit the row limit, there may be more.
    hit_limit: bool,
    /// A keyed entry: keys whose statement reached its row limit and that still hold rows,
    /// for a queue row of their own at the back of the queue (run()).
    unfinished: BTreeSet<String>,
}

/// Apply one reference's action for the entry's keys, in the child and each of its leaf
/// partitions.
fn purge_reference(reference: &Reference, entry: &Entry) -> Purged {
    let limit = ROWS_PER_STATEMENT.get();
    let owner = table_owner(reference.child_oid);
    let _check = ParentCheck::prepare(reference, owner);
    let mut purged = Purged {
        rows: Rows::default(),
        hit_limit: false,
        unfinished: BTreeSet::new(),
    };
    let settings = StatementSettings::new();
    let pass = match (entry.final_pass, entry.locking_first) {
        (false, _) => Pass::First,
        (true, false) => Pass::Final,
        (true, true) => Pass::FinalLockingFirst,
    };
    for leaf in as_extension_owner(|| leaves(reference)) {
        let lookup = as_extension_owner(|| key_lookup(leaf.oid, &reference.child_column));
        let leaf = leaf.qualified_name;
        // The worker's pg_stat_activity row says which child and batch it is at (a user's
        // softfk_purge() leaves the caller's query text alone).
        if process::is_background_worker() {
            process::report_activity(Some(&format!(
                "pg_softfk purge: {}({}) -> {}: {} of queue row {}, {} pass",
                leaf,
                reference.child_column_quoted,
                reference.parent_table,
                match entry.keys.as_ref().map(Vec::len) {
                    None => "every key".to_string(),
                    Some(1) => "1 key".to_string(),
                    Some(n) => format!("{n} keys"),
                },
                entry.id,
                if entry.final_pass { "final" } else { "first" },
            )));
        }
        // The statement runs with the rights of the child's owner, as core's cascades do: its
        // triggers, defaults and constraints never run with more rights than that owner has.
        // As a restricted operation (as VACUUM runs index functions): they can create no
        // session state (temporary tables, prepared statements, held cursors, LISTEN, SET
        // ROLE) that would outlive the statement in the worker's long-lived session.
        let mut run = |pass: Pass, keys: &[String], rows_at_most: Option<i32>| {
            let sql = reference.purge_sql(&leaf, lookup, pass);
            let changed = as_table_owner(owner, || {
                settings.apply(|| execute(&sql, reference.on_delete, keys, rows_at_most))
            });
            // The final pass's first statement judged rows under its snapshot; a parent key
            // re-created since (by a transaction that held a row it then waited for, say)
            // makes the batch roll back and run again locking every row first (run()).
            // Checked only when rows changed; a key re-created before the purge began also
            // asks for that, which costs a slower batch, never a wrong one.
            if pass == Pass::Final && changed.count > 0 && parent_came_back(reference, keys) {
                error(
                    PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                    "a parent key came back while the purge ran",
                )
                .raise();
            }
            account(reference, &leaf, &changed, &mut purged.rows);
            changed
        };
        match &entry.keys {
            Some(keys) => {
                // Keys per statement: about `limit` rows' worth, judged from the column's
                // statistics. A key with more rows than that (a bot account's) is purged
                // `limit` rows per batch, and goes to the back of the queue between batches,
                // so that the users deleted after it do not wait for it.
                let statistics =
                    as_extension_owner(|| KeyStatistics::read(&leaf, &reference.child_column));
                let per_statement = (f64::from(limit) / statistics.rows_per_key)
                    .clamp(1.0, keys.len().max(1) as f64)
                    as usize;
                // A statement, bounded to `limit` rows or not; the keys a bounded one left rows
                // of are big, and split off.
                let mut purge = |pass: Pass, chunk: &[String], bounded: bool| {
                    if run(pass, chunk, bounded.then_some(limit)).reached_limit {
                        let left = as_table_owner(owner, || {
                            settings.apply(|| keys_with_rows(reference, &leaf, chunk))
                        });
                        remember_big_keys(&left);
                        purged.unfinished.extend(left);
                    }
                };
                for chunk in keys.chunks(per_statement) {
                    if pass != Pass::Final {
                        purge(pass, chunk, true);
                        continue;
                    }
                    // The plain final pass cannot be bounded: a key known to hold many rows
                    // takes it locking first, `limit` rows at a time.
                    let (big, small): (Vec<String>, Vec<String>) = chunk
                        .iter()
                        .cloned()
                        .partition(|key| statistics.is_big(key, limit) || is_big_key(key));
                    for key in big {
                        purge(Pass::FinalLockingFirst, &[key], true);
                    }
                    if !small.is_empty() {
                        purge(pass, &small, false);
                    }
                }
            }
            None => {
                // Every orphan: a statement's worth of orphan keys at a time (the report's
                // anti-join, as the extension's owner), one round per leaf and batch. The
                // entry is done when a round finds none.
                let orphan_keys = as_extension_owner(|| {
                    with_settings(&KEY_TEXT_SETTINGS, || {
                        read_one::<Vec<String>>(&reference.orphan_keys_sql(&leaf), &[limit.into()])
                    })
                })
                .unwrap_or_default();
                // More may follow while a round changes rows; a round whose orphan rows are
                // all locked by others (skipped) changes none and leaves them to the final pass.
                // A round that finds the very keys the last one purged made no progress: in a
                // first pass, rows others hold (left to the final pass); in the final pass,
                // which waits for them, a trigger on the child that keeps the key — an error,
                // not an endless loop. (A round's statements are not bounded in rows: the
                // same keys found again would be progress.)
                if !orphan_keys.is_empty() {
                    let round = (entry.id, reference.id, leaf.clone());
                    let same_as_last =
                        LAST_ROUND.with_borrow(|last| last.get(&round) == Some(&orphan_keys));
                    if same_as_last && !entry.final_pass {
                        continue;
                    }
                    if same_as_last {
                        error(
                            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!(
                                "purging {leaf} makes no progress: its orphan rows keep their keys"
                            ),
                        )
                        .detail("A trigger on the table may keep the key column as it was.")
                        .raise();
                    }
                    if run(pass, &orphan_keys, None).count > 0 {
                        purged.hit_limit = true;
                        LAST_ROUND.with_borrow_mut(|last| last.insert(round, orphan_keys));
                    }
                }
            }
        }
    }
    purged
}

/// Which of `keys` still have rows in `leaf` (as the child's owner).
fn keys_with_rows(reference: &Reference, leaf: &str, keys: &[String]) -> Vec<String> {
    read_one::<Vec<String>>(&reference.keys_with_rows_sql(leaf), &[keys.to_vec().into()])
        .unwrap_or_default()
}

/// Keys this process found holding more rows than a statement purges, so that their final
/// pass is bounded even when the column's statistics do not know them yet. Bounded: a
/// forgotten key costs only a slower final pass.
const BIG_KEYS_REMEMBERED: usize = 10_000;

thread_local! {
    static BIG_KEYS: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

fn remember_big_keys(keys: &[String]) {
    BIG_KEYS.with_borrow_mut(|big| {
        if big.len() + keys.len() > BIG_KEYS_REMEMBERED {
            big.clear();
        }
        big.extend(keys.iter().cloned());
    });
}

fn is_big_key(key: &str) -> bool {
    BIG_KEYS.with_borrow(|big| big.contains(key))
}

/// Whether one of `keys` (all absent when queued) has a row in the reference's parent now,
/// under a new snapshot.
fn parent_came_back(reference: &Reference, keys: &[String]) -> bool {
    let absent = as_extension_owner(|| {
        with_settings(&KEY_TEXT_SETTINGS, || {
            read_one::<Vec<String>>(&reference.absent_keys_sql(), &[keys.to_vec().into()])
        })
    })
    .unwrap_or_default();
    absent.len() < keys.len()
}

pub(super) fn table_owner(table: pg_sys::Oid) -> pg_sys::Oid {
    as_extension_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1",
                    None,
                    &[table.into()],
                )
                .expect("reading pg_class")
                .first()
                .get::<pg_sys::Oid>(1)
                .expect("relowner")
                .expect("the child table exists")
        })
    })
}

/// The relations a purge statement targets: the child, or each leaf partition of it (in oid
/// order).
pub(super) fn leaves(reference: &Reference) -> Vec<Leaf> {
    if !reference.child_partitioned {
        return vec![Leaf {
            oid: reference.child_oid,
            qualified_name: reference.child_table.clone(),
        }];
    }
    leaf_partitions(reference.child_oid)
}

/// What the planner's statistics say about a leaf's key column: the average number of rows
/// per key value (1 when it has none: never analyzed), and the most common keys with the
/// number of rows each is estimated to hold, as text written with the key text settings.
pub(super) struct KeyStatistics {
    pub(super) rows_per_key: f64,
    common: HashMap<String, f64>,
}

impl KeyStatistics {
    pub(super) fn read(leaf: &str, column: &str) -> KeyStatistics {
        let (rows_per_key, common_keys, common_rows) = with_settings(&KEY_TEXT_SETTINGS, || {
            Spi::connect(|client| {
                let row = client
                    .select(
                        "SELECT CASE WHEN s.stadistinct > 0 THEN greatest(c.reltuples, 1) / s.stadistinct
                                     WHEN s.stadistinct < 0 THEN -1 / s.stadistinct END::float8,
                                -- The most common values (stakind 1), in whichever slot holds them.
                                (CASE 1 WHEN s.stakind1 THEN s.stavalues1 WHEN s.stakind2 THEN s.stavalues2
                                        WHEN s.stakind3 THEN s.stavalues3 WHEN s.stakind4 THEN s.stavalues4
                                        WHEN s.stakind5 THEN s.stavalues5 END)::text::text[],
                                ARRAY(SELECT f * greatest(c.reltuples, 0)
                                        FROM unnest(CASE 1 WHEN s.stakind1 THEN s.stanumbers1
                                                           WHEN s.stakind2 THEN s.stanumbers2
                                                           WHEN s.stakind3 THEN s.stanumbers3
                                                           WHEN s.stakind4 THEN s.stanumbers4
                                                           WHEN s.stakind5 THEN s.stanumbers5 END) AS f)::float8[]
                           FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2
                           JOIN pg_catalog.pg_statistic s
                             ON s.starelid = c.oid AND s.staattnum = a.attnum AND NOT s.stainherit
                          WHERE c.oid = $1::pg_catalog.regclass",
                        None,
                        &[leaf.into(), column.into()],
                    )
                    .expect("reading pg_statistic");
                if row.is_empty() {
                    return (None, None, None);
                }
                let row = row.first();
                (
                    row.get::<f64>(1).unwrap(),
                    row.get::<Vec<String>>(2).unwrap(),
                    row.get::<Vec<f64>>(3).unwrap(),
                )
            })
        });
        KeyStatistics {
            rows_per_key: rows_per_key
                .filter(|rows| rows.is_finite() && *rows >= 1.0)
                .unwrap_or(1.0),
            common: common_keys
                .unwrap_or_default()
                .into_iter()
                .zip(common_rows.unwrap_or_default())
                .collect(),
        }
    }

    /// Whether `key` is estimated to hold more than `limit` rows.
    fn is_big(&self, key: &str, limit: i32) -> bool {
        self.common
            .get(key)
            .is_some_and(|rows| *rows > f64::from(limit))
    }
}

/// What one purge statement did: rows changed, and for 'archive' the rows it deleted as
/// (key, row as jsonb) text.
#[derive(Default)]
pub(super) struct Changed {
    pub(super) count: i64,
    archived: Vec<(String, String)>,
    /// 'set null': rows changed that still hold their key (a trigger kept it).
    kept: i64,
    /// It changed as many rows as it was allowed to: the keys may hold more.
    reached_limit: bool,
}

impl Changed {
    /// Add what an action statement returned: nothing for 'cascade', the deleted rows for
    /// 'archive', one row of counts for 'set null' (src/catalog/query.rs).
    pub(super) fn add(&mut self, on_delete: OnDelete, result: pgrx::spi::SpiTupleTable) {
        match on_delete {
            OnDelete::SetNull => {
                let counts = result.first();
                self.count += counts.get::<i64>(1).unwrap().unwrap_or(0);
                self.kept += counts.get::<i64>(2).unwrap().unwrap_or(0);
            }
            OnDelete::Archive => {
                self.count += result.len() as i64;
                self.archived.extend(result.map(|row| {
                    (
                        row.get::<String>(1).unwrap().unwrap(),
                        row.get::<String>(2).unwrap().unwrap(),
                    )
                }));
            }
            OnDelete::Cascade | OnDelete::NoAction => self.count += result.len() as i64,
        }
    }
}

/// The worker's own statement timeout (pg_softfk.statement_timeout), armed until dropped:
/// core arms it only around client statements. softfk_purge() leaves the caller's alone.
pub(super) fn statement_timeout() -> Option<StatementTimeout> {
    let timeout = if process::is_background_worker() {
        STATEMENT_TIMEOUT.get()
    } else {
        0
    };
    (timeout > 0).then(|| StatementTimeout::arm(timeout))
}

/// Run the purge statements of one pass over one leaf for `keys` ([`PurgeSql`]), on at most
/// `rows_at_most` rows (a first pass, or a final pass locking first). What a statement returns
/// depends on the action (src/catalog/query.rs): nothing for 'cascade', the deleted rows for
/// 'archive', one row of counts for 'set null'.
fn execute(
    sql: &PurgeSql,
    on_delete: OnDelete,
    keys: &[String],
    rows_at_most: Option<i32>,
) -> Changed {
    let limit = rows_at_most.map(i64::from);
    let armed = statement_timeout;
    Spi::connect_mut(|client| {
        let mut changed = Changed::default();
        let mut take = |result: pgrx::spi::SpiTupleTable| changed.add(on_delete, result);
        match sql {
            PurgeSql::One(statement) => {
                let _armed = armed();
                take(
                    client
                        .update(statement, None, &[keys.to_vec().into(), limit.into()])
                        .expect("running a purge statement"),
                );
                changed.reached_limit = limit.is_some_and(|limit| changed.count >= limit);
            }
            PurgeSql::LockThenAct { lock, act } => {
                let locked = {
                    let _armed = armed();
                    client
                        .update(lock, None, &[keys.to_vec().into(), limit.into()])
                        .expect("locking the rows of a final purge pass")
                        .first()
                        .get::<Vec<String>>(1)
                        .expect("reading the locked rows")
                        .unwrap_or_default()
                };
                let locked_rows = locked.len() as i64;
                let all_locked = limit.is_some_and(|limit| locked_rows >= limit);
                if !locked.is_empty() {
                    let _armed = armed();
                    take(
                        client
                            .update(act, None, &[keys.to_vec().into(), locked.into()])
                            .expect("running a purge statement"),
                    );
                }
                // (Rows locked but not changed, a BEFORE DELETE trigger that skips them, are
                // no reason to come back.)
                changed.reached_limit = all_locked && changed.count >= locked_rows;
            }
        }
        changed
    })
}
