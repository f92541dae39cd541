//! What the purge did, for operators: the run log `softfk.purge_run` (one row per run) and
//! the totals `softfk.purge_total` (one row per reference, with its last error).

use std::collections::BTreeMap;

use pgrx::prelude::*;
use pgrx::JsonB;

use super::{Mode, RunReport, Touched};
use crate::postgres::roles::as_extension_owner;

/// A run's first row in the run log. Whoever holds the run lock knows that a 'running' row
/// left behind is a run whose process ended (crash, kill, shutdown) before it finished.
pub fn start(mode: Mode) -> impl FnOnce() -> i64 {
    move || {
        as_extension_owner(|| {
            // The log keeps a week.
            Spi::run("DELETE FROM softfk.purge_run WHERE finished_at < now() - interval '7 days'")
                .expect("trimming softfk.purge_run");
            Spi::run(
                "UPDATE softfk.purge_run
                    SET status = 'failed', finished_at = clock_timestamp(),
                        errors = errors || jsonb_build_array(jsonb_build_object(
                            'message', 'interrupted: the process running it ended before it finished'))
                  WHERE status = 'running'",
            )
            .expect("closing interrupted runs");
            Spi::get_one_with_args::<i64>(
                "INSERT INTO softfk.purge_run (started_by) VALUES ($1) RETURNING id",
                &[mode.name().into()],
            )
            .expect("writing softfk.purge_run")
            .expect("INSERT RETURNING returns the id")
        })
    }
}

pub fn finish(run_id: i64, report: &RunReport) {
    // A run that only gave way to other sessions' locks did not fail: it left its keys for the
    // next run.
    let failures = report.errors.len() - report.gave_way;
    let status = match (report.errors.is_empty(), report.batches, failures) {
        (true, _, _) => "completed",
        (false, 0, 1..) => "failed",
        (false, _, _) => "partial",
    };
    let total = report.total();
    // {"reference id": rows changed}: softfk_status's recent rows per second.
    let rows_by_reference = serde_json::Value::Object(
        report
            .rows
            .iter()
            .map(|(id, touched)| (id.to_string(), touched.rows.total().into()))
            .collect(),
    );
    as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE softfk.purge_run
                SET status = $2, finished_at = clock_timestamp(), batches = $3, keys_purged = $4,
                    rows_deleted = $5, rows_nulled = $6, rows_archived = $7, errors = $8,
                    rows_by_reference = $9
              WHERE id = $1",
            &[
                run_id.into(),
                status.into(),
                (report.batches as i32).into(),
                report.keys.into(),
                total.deleted.into(),
                total.nulled.into(),
                total.archived.into(),
                JsonB(serde_json::Value::Array(report.errors.clone())).into(),
                JsonB(rows_by_reference).into(),
            ],
        )
        .expect("writing softfk.purge_run")
    });
}

pub fn record_error(reference: i64, message: &str) {
    as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO softfk.purge_total AS t (reference_id, last_error, last_error_at)
             SELECT $1, $2, clock_timestamp() WHERE EXISTS (SELECT FROM softfk.reference WHERE id = $1)
             ON CONFLICT (reference_id) DO UPDATE
                SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
            &[reference.into(), message.into()],
        )
        .expect("writing softfk.purge_total")
    });
}

/// Add what a batch changed to each reference's totals (in the batch's transaction).
pub fn add_totals(rows: &BTreeMap<i64, Touched>) {
    for (reference, touched) in rows {
        let changed = touched.rows;
        Spi::run_with_args(
            "INSERT INTO softfk.purge_total AS t
                    (reference_id, rows_deleted, rows_nulled, rows_archived, last_run_at)
             VALUES ($1, $2, $3, $4, clock_timestamp())
             ON CONFLICT (reference_id) DO UPDATE
                SET rows_deleted = t.rows_deleted + $2, rows_nulled = t.rows_nulled + $3,
                    rows_archived = t.rows_archived + $4, last_run_at = clock_timestamp()",
            &[
                (*reference).into(),
                changed.deleted.into(),
                changed.nulled.into(),
                changed.archived.into(),
            ],
        )
        .expect("updating softfk.purge_total");
    }
}
