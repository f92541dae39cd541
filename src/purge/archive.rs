//! on_delete 'archive': the rows a purge statement deleted go to `softfk.archived_row`, and
//! `softfk_restore` puts them back. The archive is never lost silently: `DROP EXTENSION
//! pg_softfk` (which would drop the table with it) is refused while it holds rows.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::reference::Reference;
use crate::postgres::error::error;
use crate::postgres::event_trigger::{list_names, parse_tree};
use crate::postgres::fmgr::function_info_v1;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::read_one;

function_info_v1!(pg_finfo_softfk_keep_archive);

/// SQL: softfk.keep_archive() RETURNS event_trigger, on `ddl_command_start` of
/// `DROP EXTENSION` and `DROP SCHEMA`.
///
/// Refuses (2BP01) to drop pg_softfk, or the schema `softfk` with it, while
/// softfk.archived_row holds rows: they are child rows kept so that they can be put back,
/// and DROP EXTENSION would delete them with the table. (`DROP SCHEMA <the API's schema>
/// CASCADE` is not looked at: it drops far more than the archive, and says so.)
///
/// # Safety
/// Called by PostgreSQL's function manager, with its `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn softfk_keep_archive(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is this call's; a DROP's parse tree is a DropStmt (checked by its tag),
    // whose objects for extensions and schemas are a List of String nodes.
    let dropped = unsafe {
        let tree = parse_tree(fcinfo, "softfk.keep_archive()");
        if tree.is_null() || (*tree).type_ != pg_sys::NodeTag::T_DropStmt {
            return pg_sys::Datum::from(0);
        }
        let statement = &*(tree as *mut pg_sys::DropStmt);
        let names = list_names(statement.objects);
        match statement.removeType {
            pg_sys::ObjectType::OBJECT_EXTENSION => names.iter().any(|n| n == "pg_softfk"),
            pg_sys::ObjectType::OBJECT_SCHEMA => names.iter().any(|n| n == "softfk"),
            _ => false,
        }
    };
    if !dropped {
        return pg_sys::Datum::from(0);
    }
    let archived =
        as_extension_owner(|| read_one::<i64>("SELECT count(*) FROM softfk.archived_row", &[]))
            .unwrap_or(0);
    if archived > 0 {
        error(
            PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop extension pg_softfk: its archive holds {archived} child rows"),
        )
        .detail("softfk.archived_row keeps the rows on_delete 'archive' took out, for softfk_restore(); dropping the extension would delete them.")
        .hint("To keep them, copy them out first (CREATE TABLE kept_rows AS TABLE softfk.archived_row); then, or to discard them, TRUNCATE softfk.archived_row and drop the extension again.")
        .raise();
    }
    pg_sys::Datum::from(0)
}

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
