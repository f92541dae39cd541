//! on_delete 'archive': the rows a purge statement deleted go to `softfk.archived_row`, and
//! `softfk_restore` puts them back.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::reference::Reference;
use crate::postgres::error::error;
use crate::postgres::roles::as_extension_owner;

/// Move rows a purge statement deleted ('archive') into softfk.archived_row.
pub fn archive(reference: &Reference, archived: &[(String, String)]) {
    if archived.is_empty() {
        return;
    }
    let (keys, rows): (Vec<&str>, Vec<&str>) = archived
        .iter()
        .map(|(k, r)| (k.as_str(), r.as_str()))
        .unzip();
    Spi::run_with_args(
        "INSERT INTO softfk.archived_row (child_table, child_column, parent_table, key, child_row)
         SELECT $1::oid::regclass, $2, $3::oid::regclass, a.key, a.child_row::jsonb
           FROM unnest($4::text[], $5::text[]) AS a (key, child_row)",
        &[
            reference.child_oid.into(),
            reference.child_column.as_str().into(),
            reference.parent_oid.into(),
            keys.into(),
            rows.into(),
        ],
    )
    .expect("writing softfk.archived_row");
}

/// Put back every child row archived after parent key `key` of `parent` was deleted, with
/// the caller's rights; returns how many. See `softfk_restore` (src/api/purge.rs).
pub fn restore(parent: pg_sys::Oid, key: &str) -> i64 {
    let archived: Vec<(pg_sys::Oid, String)> = as_extension_owner(|| {
        Spi::connect_mut(|client| {
            client
                .update(
                    "WITH taken AS (
                        DELETE FROM softfk.archived_row WHERE parent_table = $1 AND key = $2
                        RETURNING id, child_table, child_row)
                     SELECT child_table::oid, child_row::text FROM taken ORDER BY id",
                    None,
                    &[parent.into(), key.into()],
                )
                .expect("reading softfk.archived_row")
                .map(|row| (row.get(1).unwrap().unwrap(), row.get(2).unwrap().unwrap()))
                .collect()
        })
    });
    for (child, row) in &archived {
        let (table, columns, unknown) = restorable_columns(*child, row);
        if !unknown.is_empty() {
            error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "cannot restore archived rows of table {table}: it has no column {}",
                    unknown.join(", ")
                ),
            )
            .detail("The rows were archived with these columns, which were renamed or dropped since. Nothing was restored.")
            .hint("Add or rename the columns back, restore, then change the table again.")
            .raise();
        }
        let list = columns.join(", ");
        Spi::run_with_args(
            &format!(
                "INSERT INTO {table} ({list}) OVERRIDING SYSTEM VALUE \
                 SELECT {list} FROM pg_catalog.jsonb_populate_record(NULL::{table}, $1::pg_catalog.jsonb)"
            ),
            &[row.as_str().into()],
        )
        .expect("restoring an archived row");
    }
    archived.len() as i64
}

/// For an archived row (jsonb text) of `child`: the table's name, its columns the row holds a
/// value for that take one (not generated), quoted, and the row's keys that name no column.
fn restorable_columns(child: pg_sys::Oid, row: &str) -> (String, Vec<String>, Vec<String>) {
    Spi::connect(|client| {
        let found = client
            .select(
                "SELECT $1::pg_catalog.regclass::pg_catalog.text,
                        pg_catalog.array_agg(pg_catalog.quote_ident(a.attname) ORDER BY a.attnum)
                            FILTER (WHERE a.attgenerated = ''),
                        pg_catalog.array_agg(pg_catalog.quote_ident(k.key) ORDER BY k.key)
                            FILTER (WHERE a.attname IS NULL)
                   FROM pg_catalog.jsonb_object_keys($2::pg_catalog.jsonb) AS k (key)
                   LEFT JOIN pg_catalog.pg_attribute a
                          ON a.attrelid = $1 AND a.attname = k.key AND a.attnum > 0
                         AND NOT a.attisdropped",
                None,
                &[child.into(), row.into()],
            )
            .expect("reading the child's columns")
            .first();
        (
            found.get::<String>(1).unwrap().unwrap_or_default(),
            found.get::<Vec<String>>(2).unwrap().unwrap_or_default(),
            found.get::<Vec<String>>(3).unwrap().unwrap_or_default(),
        )
    })
}
