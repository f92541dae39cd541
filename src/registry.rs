//! The registry: which child columns are soft references to which parent keys.
//!
//! `softfk_add` checks a definition the way core checks `ALTER TABLE ... ADD FOREIGN KEY`
//! (table kinds, ownership, REFERENCES privilege, a unique index on the parent key, comparable
//! types) and only then writes one row to `softfk.reference`. Every check raises an error with
//! a SQLSTATE before anything is written, so a refused call changes nothing.
//!
//! A column that no validated foreign key vouches for may already hold orphans: softfk_add
//! counts them (one scan of the child, as core's validation does) and says so in a NOTICE,
//! before it takes the locks that block writers to the child. During the count it holds SHARE
//! UPDATE EXCLUSIVE on the child, which serialises two sessions registering the same column
//! (the second one sees the first one's row and gets a clean "already has a soft reference"
//! error instead of a unique violation), and ACCESS SHARE on the parent — unless no reference
//! to that parent column exists yet: then nothing captures the parent's deletes until this
//! registration commits, so SHARE ROW EXCLUSIVE on the parent comes first. Then, like core,
//! it takes SHARE ROW EXCLUSIVE on the child and the parent to create the triggers: writes to
//! both wait for the rest of the registering transaction.

use std::ffi::CStr;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::error::{error, required};
use crate::settings::{with_settings, SAFE_SEARCH_PATH};
use crate::{capture, check, report};

/// What happens to child rows once their parent row is deleted, as SQL spells it.
pub const ON_DELETE_ACTIONS: &[&str] = &["cascade", "set null", "archive", "no action"];

/// What happens to child rows once their parent row is deleted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnDelete {
    Cascade,
    SetNull,
    Archive,
    NoAction,
}

impl OnDelete {
    /// One of [`ON_DELETE_ACTIONS`] (the registry's CHECK constraint keeps out the rest).
    pub fn parse(value: &str) -> OnDelete {
        match value {
            "cascade" => OnDelete::Cascade,
            "set null" => OnDelete::SetNull,
            "archive" => OnDelete::Archive,
            "no action" => OnDelete::NoAction,
            other => unreachable!("softfk.reference.on_delete holds '{other}'"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Cascade => "cascade",
            OnDelete::SetNull => "set null",
            OnDelete::Archive => "archive",
            OnDelete::NoAction => "no action",
        }
    }
}
/// When a child key is checked against the parent on write.
pub const VALIDATE_MODES: &[&str] = &["deferred", "immediate", "off"];

/// A registration, resolved against the current catalogs: everything the query builder
/// (report.rs) needs, with identifiers already quoted.
pub struct Reference {
    pub id: i64,
    pub on_delete: OnDelete,
    /// `schema.table` of the child, quoted.
    pub child_table: String,
    /// true for a partitioned child (scanned with its partitions, not `ONLY`).
    pub child_partitioned: bool,
    /// The child column's current name, unquoted.
    pub child_column: String,
    pub parent_table: String,
    pub parent_partitioned: bool,
    pub parent_column: String,
    /// The parent key's type (a domain's base type), as format_type() writes it.
    pub parent_type: String,
    /// The parent key's btree equality operator, as `schema.=`.
    pub operator: String,
    /// The type the child key is cast to before comparing (varchar -> text), if any.
    pub child_cast: Option<String>,
    pub child_oid: pg_sys::Oid,
    pub parent_oid: pg_sys::Oid,
}

/// Which registrations [`load`] reads.
pub enum Which<'a> {
    All,
    /// The one on this child column.
    Child(pg_sys::Oid, &'a str),
    /// Those referencing this parent column.
    Parent(pg_sys::Oid, &'a str),
    /// The one with this id.
    Id(i64),
}

/// Registrations, resolved against the current catalogs. Ordered by child, column. Raises
/// the error of the first one that can no longer be checked ([`Unusable`]).
pub fn load(which: Which) -> Vec<Reference> {
    load_each(which)
        .into_iter()
        .map(|loaded| loaded.unwrap_or_else(|unusable| unusable.raise()))
        .collect()
}

/// A registration whose columns can no longer be compared (a key's type changed, the unique
/// index dropped): it is kept, and named, until it is fixed or dropped.
pub struct Unusable {
    pub id: i64,
    pub on_delete: OnDelete,
    pub message: String,
    detail: String,
}

impl Unusable {
    pub fn raise(&self) -> ! {
        error(ERRCODE_DATATYPE_MISMATCH, self.message.clone())
            .detail(self.detail.clone())
            .hint("Change the column type back, or remove the soft reference with softfk_drop().")
            .raise()
    }
}

/// Registrations as [`load`] reads them, each one resolved or [`Unusable`], so that one broken
/// registration does not stop the purge or the report of the others.
pub fn load_each(which: Which) -> Vec<Result<Reference, Unusable>> {
    const LOAD: &str = "
        SELECT r.child_table::oid, format('%I.%I', cn.nspname, c.relname), c.relkind = 'p',
               ca.attname::text,
               r.parent_table::oid, format('%I.%I', pn.nspname, p.relname), p.relkind = 'p',
               pa.attname::text,
               k.operator,
               (SELECT format('%I.%I', tn.nspname, t.typname)
                  FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace
                 WHERE k.child_cast IS NOT NULL AND t.oid = k.right_type),
               format_type(ca.atttypid, ca.atttypmod),
               -- A domain's base type: casting a key to the domain would run its CHECK
               -- constraints (anyone's functions) as the extension's owner. Named with its
               -- schema: purge statements run child owners' triggers, and their search_path
               -- must not decide what a cast in our SQL means.
               (WITH RECURSIVE base AS (
                    SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t WHERE t.oid = pa.atttypid
                    UNION ALL
                    SELECT t.oid, t.typtype, t.typbasetype FROM base JOIN pg_type t ON t.oid = base.typbasetype
                     WHERE base.typtype = 'd')
                SELECT format('%I.%I', tn.nspname, t.typname)
                  FROM base JOIN pg_type t ON t.oid = base.oid
                  JOIN pg_namespace tn ON tn.oid = t.typnamespace
                 WHERE base.typtype <> 'd'),
               r.id, r.on_delete, format_type(pa.atttypid, pa.atttypmod)
          FROM softfk.reference r
          JOIN pg_class c ON c.oid = r.child_table
          JOIN pg_namespace cn ON cn.oid = c.relnamespace
          JOIN pg_attribute ca ON ca.attrelid = r.child_table AND ca.attnum = r.child_attnum
          JOIN pg_class p ON p.oid = r.parent_table
          JOIN pg_namespace pn ON pn.oid = p.relnamespace
          JOIN pg_attribute pa ON pa.attrelid = r.parent_table AND pa.attnum = r.parent_attnum
          LEFT JOIN LATERAL softfk.key_comparison(r.parent_table, r.parent_attnum,
                                                  r.child_table, r.child_attnum) k ON true
         WHERE ($1 IS NULL OR (r.child_table = $1 AND ca.attname = $2))
           AND ($3 IS NULL OR (r.parent_table = $3 AND pa.attname = $4))
           AND ($5 IS NULL OR r.id = $5)
         ORDER BY 2, 4";
    let (child, child_column, parent, parent_column, id) = match which {
        Which::All => (None, None, None, None, None),
        Which::Child(oid, column) => (Some(oid), Some(column), None, None, None),
        Which::Parent(oid, column) => (None, None, Some(oid), Some(column), None),
        Which::Id(id) => (None, None, None, None, Some(id)),
    };
    as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client
                .select(
                    LOAD,
                    None,
                    &[
                        child.into(),
                        child_column.into(),
                        parent.into(),
                        parent_column.into(),
                        id.into(),
                    ],
                )
                .expect("reading softfk.reference");
            rows.map(|row| {
            let text = |n: usize| row.get::<String>(n).expect("registry column").unwrap_or_default();
            let operator = text(9);
            if operator.is_empty() {
                // The key types were changed (ALTER COLUMN TYPE) or the unique index dropped
                // after registering.
                return Err(Unusable {
                    id: row.get(13).unwrap().unwrap(),
                    on_delete: OnDelete::parse(&text(14)),
                    message: format!(
                        "soft reference {}.{} -> {}.{} can no longer be checked",
                        text(2),
                        quote_identifier(&text(4)),
                        text(6),
                        quote_identifier(&text(8)),
                    ),
                    detail: format!(
                        "The parent column needs a unique index comparable with the child column; types are {} and {}.",
                        text(11),
                        text(15)
                    ),
                });
            }
            Ok(Reference {
                id: row.get(13).unwrap().unwrap(),
                on_delete: OnDelete::parse(&text(14)),
                child_oid: row.get(1).unwrap().unwrap(),
                child_table: text(2),
                child_partitioned: row.get(3).unwrap().unwrap_or(false),
                child_column: text(4),
                parent_oid: row.get(5).unwrap().unwrap(),
                parent_table: text(6),
                parent_partitioned: row.get(7).unwrap().unwrap_or(false),
                parent_column: text(8),
                parent_type: text(12),
                operator,
                child_cast: row.get::<String>(10).unwrap(),
            })
        })
        .collect()
        })
    })
}

/// The registration on child.child_column; 42704 when there is none.
pub fn load_child(child: pg_sys::Oid, child_column: &str) -> Reference {
    load(Which::Child(child, child_column))
        .pop()
        .unwrap_or_else(|| {
            let table = read_one::<String>(
                "SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1",
                &[child.into()],
            )
            .unwrap_or_else(|| child.to_string());
            not_registered(&table, child_column)
        })
}

/// Refused (42501) unless the caller owns the table, as ALTER TABLE requires.
pub fn require_owner(table: pg_sys::Oid) {
    Table::describe(table).require_owner();
}

/// SQL: softfk_add(child regclass, child_column name, parent regclass,
///                 parent_column name DEFAULT NULL (the primary key),
///                 on_delete text DEFAULT 'cascade', validate text DEFAULT 'deferred')
#[pg_extern(sql = false)]
fn softfk_add(
    child: Option<pg_sys::Oid>,
    child_column: Option<&CStr>,
    parent: Option<pg_sys::Oid>,
    parent_column: Option<&CStr>,
    on_delete: Option<&str>,
    validate: Option<&str>,
) {
    let child = required(child, "child");
    let child_column = name_arg(required(child_column, "child_column"));
    let parent = required(parent, "parent");
    let on_delete = one_of(
        "on_delete",
        required(on_delete, "on_delete"),
        ON_DELETE_ACTIONS,
    );
    let validate = one_of("validate", required(validate, "validate"), VALIDATE_MODES);

    let child_rel = Table::describe(child);
    let parent_rel = Table::describe(parent);
    child_rel.require_registrable("child");
    parent_rel.require_registrable("parent");
    if parent_rel.unlogged && !child_rel.unlogged {
        // As core refuses for a foreign key: after a crash an unlogged parent comes back
        // empty, and every row of the permanent child would be an orphan for the purge.
        error(
            ERRCODE_INVALID_TABLE_DEFINITION,
            "soft references on permanent tables may reference only permanent tables",
        )
        .detail(format!(
            "\"{}\" is unlogged; \"{}\" is not.",
            parent_rel.name, child_rel.name
        ))
        .raise();
    }
    child_rel.require_owner();
    parent_rel.require_references_privilege();
    // Until the existing rows are counted, locks that let writers through: SHARE UPDATE
    // EXCLUSIVE on the child (it conflicts with itself, so two registrations of the same
    // column still wait for each other) and ACCESS SHARE on the parent.
    child_rel.lock(pg_sys::ShareUpdateExclusiveLock);
    parent_rel.lock(pg_sys::AccessShareLock);

    let child_col = child_rel.column(&child_column);
    let parent_col = match parent_column {
        Some(name) => parent_rel.column(&name_arg(name)),
        None => parent_rel.primary_key_column(),
    };
    if child == parent && child_col.attnum == parent_col.attnum {
        error(
            ERRCODE_INVALID_FOREIGN_KEY,
            format!(
                "column \"{}\" cannot be a soft reference to itself",
                child_col.name
            ),
        )
        .raise();
    }
    require_comparable(&child_rel, &child_col, &parent_rel, &parent_col);
    require_nullable_for_set_null(on_delete, &child_rel, &child_col);
    if let Some(existing) = registered_parent(child, child_col.attnum) {
        error(
            ERRCODE_DUPLICATE_OBJECT,
            format!(
                "column \"{}\" of table \"{}\" already has a soft reference",
                child_col.name, child_rel.name
            ),
        )
        .detail(format!("It references {existing}."))
        .hint("Remove it with softfk_drop() first to register it differently.")
        .raise();
    }

    let already_captured = as_extension_owner(|| {
        read_one::<bool>(
            "SELECT EXISTS (SELECT FROM softfk.reference WHERE parent_table = $1 AND parent_attnum = $2)",
            &[parent.into(), parent_col.attnum.into()],
        )
    })
    .unwrap_or(false);
    let id = as_extension_owner(|| {
        Spi::get_one_with_args::<i64>(
            "INSERT INTO softfk.reference
                (child_table, child_column, parent_table, parent_column, on_delete, validate)
         VALUES ($1::oid::regclass, $2, $3::oid::regclass, $4, $5, $6)
         RETURNING id",
            &[
                child.into(),
                child_col.name.as_str().into(),
                parent.into(),
                parent_col.name.as_str().into(),
                on_delete.into(),
                validate.into(),
            ],
        )
    })
    .expect("writing softfk.reference")
    .expect("INSERT RETURNING returns the id");
    // A parent row deleted while the count runs must still be captured. When the parent
    // column is captured already (another reference to it), its triggers queue the key, and
    // the key's final pass waits for this transaction, so it sees this reference. When it is
    // not, the triggers come with this registration: parent writes must wait from now on.
    if !already_captured {
        parent_rel.lock(pg_sys::ShareRowExclusiveLock);
    }
    if report::ORPHANS_ON_ADD.get()
        && !has_valid_foreign_key(child, child_col.attnum, parent, parent_col.attnum)
    {
        report::announce_existing_orphans(id);
    }
    // Now the triggers: creating them needs SHARE ROW EXCLUSIVE on both tables, as for a
    // native foreign key. The check triggers are created as the caller, who owns the child.
    child_rel.lock(pg_sys::ShareRowExclusiveLock);
    parent_rel.lock(pg_sys::ShareRowExclusiveLock);
    check::install(id, child, &child_col.name, validate);
    capture::sync(parent);
}

/// SQL: softfk_alter(child regclass, child_column name, on_delete text DEFAULT NULL,
///                   validate text DEFAULT NULL)
/// Change what a registration does; a NULL argument keeps that setting. Changing `validate`
/// replaces the check triggers; rows already in the table are not re-checked.
#[pg_extern(sql = false)]
fn softfk_alter(
    child: Option<pg_sys::Oid>,
    child_column: Option<&CStr>,
    on_delete: Option<&str>,
    validate: Option<&str>,
) {
    let child = required(child, "child");
    let child_column = name_arg(required(child_column, "child_column"));
    if on_delete.is_none() && validate.is_none() {
        error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "on_delete and validate must not both be NULL")
            .hint("Pass the setting to change, e.g. softfk_alter(child, column, validate => 'immediate').")
            .raise();
    }
    let on_delete = on_delete.map(|value| one_of("on_delete", value, ON_DELETE_ACTIONS));
    let validate = validate.map(|value| one_of("validate", value, VALIDATE_MODES));
    let child_rel = Table::describe(child);
    child_rel.require_owner();
    child_rel.lock(pg_sys::ShareRowExclusiveLock);
    let column = child_rel.column(&child_column);
    if let Some(on_delete) = on_delete {
        require_nullable_for_set_null(on_delete, &child_rel, &column);
    }
    // (Through a CTE so that "not registered" is a row with a NULL, not an empty result.)
    let id = as_extension_owner(|| {
        Spi::get_one_with_args::<i64>(
            "WITH changed AS (
            UPDATE softfk.reference
               SET on_delete = coalesce($3, on_delete), validate = coalesce($4, validate)
             WHERE child_table = $1 AND child_attnum = $2
            RETURNING id)
         SELECT max(id) FROM changed",
            &[
                child.into(),
                column.attnum.into(),
                on_delete.into(),
                validate.into(),
            ],
        )
    })
    .expect("updating softfk.reference")
    .unwrap_or_else(|| not_registered(&child_rel.name, &column.name));
    if let Some(validate) = validate {
        check::remove(id, child);
        check::install(id, child, &column.name, validate);
    }
}

/// SQL: softfk_drop(child regclass, child_column name)
#[pg_extern(sql = false)]
fn softfk_drop(child: Option<pg_sys::Oid>, child_column: Option<&CStr>) {
    let child = required(child, "child");
    let child_column = name_arg(required(child_column, "child_column"));
    let child_rel = Table::describe(child);
    child_rel.require_owner();
    child_rel.lock(pg_sys::ShareRowExclusiveLock);
    let column = child_rel.column(&child_column);
    let (id, parent) = as_extension_owner(|| {
        Spi::get_two_with_args::<i64, pg_sys::Oid>(
            "WITH removed AS (
            DELETE FROM softfk.reference WHERE child_table = $1 AND child_attnum = $2
            RETURNING id, parent_table)
         SELECT max(id), max(parent_table::oid) FROM removed",
            &[child.into(), column.attnum.into()],
        )
    })
    .expect("deleting from softfk.reference");
    let id = id.unwrap_or_else(|| not_registered(&child_rel.name, &column.name));
    check::remove(id, child);
    capture::sync(parent.expect("a removed registration has a parent"));
}

fn not_registered(table: &str, column: &str) -> ! {
    error(
        ERRCODE_UNDEFINED_OBJECT,
        format!("column \"{column}\" of table \"{table}\" has no soft reference"),
    )
    .hint("SELECT * FROM softfk_references lists the registered ones.")
    .raise()
}

/// Whether a validated native foreign key already guarantees that the column has no orphans
/// (softfk_adopt registers the column before it drops the key).
fn has_valid_foreign_key(
    child: pg_sys::Oid,
    attnum: i16,
    parent: pg_sys::Oid,
    parent_attnum: i16,
) -> bool {
    read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint
                         WHERE contype = 'f' AND convalidated AND conrelid = $1 AND confrelid = $3
                           AND conkey = ARRAY[$2] AND confkey = ARRAY[$4])",
        &[
            child.into(),
            attnum.into(),
            parent.into(),
            parent_attnum.into(),
        ],
    )
    .unwrap_or(false)
}

/// 'set null' on a NOT NULL column could only fail later, in the purge: refuse it now.
fn require_nullable_for_set_null(on_delete: &str, table: &Table, column: &Column) {
    if on_delete == "set null" && column.not_null {
        error(
            ERRCODE_INVALID_TABLE_DEFINITION,
            format!(
                "on_delete 'set null' needs a nullable column, but column \"{}\" of table \"{}\" is NOT NULL",
                column.name, table.name
            ),
        )
        .hint("Use on_delete => 'cascade', or drop the NOT NULL constraint first.")
        .raise();
    }
}

/// The parent a child column is registered to, as `"table"("column")`, if it is registered.
fn registered_parent(child: pg_sys::Oid, attnum: i16) -> Option<String> {
    as_extension_owner(|| {
        Spi::get_one_with_args::<String>(
            "SELECT (SELECT format('%s(%I)', r.parent_table, a.attname)
                   FROM softfk.reference r
                   JOIN pg_attribute a ON a.attrelid = r.parent_table AND a.attnum = r.parent_attnum
                  WHERE r.child_table = $1 AND r.child_attnum = $2)",
            &[child.into(), attnum.into()],
        )
    })
    .expect("reading softfk.reference")
}

/// Run `f` as the extension's owner, with search_path pinned to the catalogs
/// ([`SAFE_SEARCH_PATH`]). The registry tables are not granted to anyone: callers reach them
/// only through these functions, after the checks above have passed as the caller (the way
/// core's RI triggers switch user around their own queries). An error unwinds the
/// transaction, which restores the caller's identity and search_path.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = read_one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_softfk'",
        &[],
    )
    .expect("pg_softfk is installed");
    as_role(owner, || with_settings(&[SAFE_SEARCH_PATH], f))
}

/// The first column of the first row of a read-only query (None for no row or NULL). Unlike
/// Spi::get_one, it does not give the transaction an id: an idle worker's polling writes no
/// WAL and burns no transaction ids.
pub fn read_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
) -> Option<T> {
    Spi::connect(|client| {
        let rows = client
            .select(sql, None, args)
            .expect("running a read-only query");
        if rows.is_empty() {
            return None;
        }
        rows.first().get::<T>(1).expect("reading a query result")
    })
}

/// Run `f` as `role`, as core's RI triggers run their queries as a table's owner: row-level
/// security applies as to that owner (not forced on it).
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    with_security_context(
        role,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_NOFORCE_RLS,
        f,
    )
}

/// Run `f` as the owner of a table, for code of that owner's that `f` fires (the purge's
/// statements and the child's triggers): as [`as_role`], and as a restricted operation, as
/// core runs index expressions in VACUUM, so that the owner's code can leave no session
/// state behind (temporary objects, prepared statements, held cursors, LISTEN, SET ROLE).
pub fn as_table_owner<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    with_security_context(
        role,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE
            | pg_sys::SECURITY_NOFORCE_RLS
            | pg_sys::SECURITY_RESTRICTED_OPERATION,
        f,
    )
}

fn with_security_context<R>(role: pg_sys::Oid, flags: u32, f: impl FnOnce() -> R) -> R {
    let (mut caller, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads and writes of the backend's current user; an error unwinding out of
    // `f` aborts the (sub)transaction, which restores the user and context saved at its start.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        pg_sys::SetUserIdAndSecContext(role, context | flags as i32);
    }
    let result = f();
    unsafe { pg_sys::SetUserIdAndSecContext(caller, context) };
    result
}

/// `on_delete` and `validate` take one word from a fixed list; the error lists them.
fn one_of(argument: &str, value: &str, valid: &[&'static str]) -> &'static str {
    let wanted = value.trim().to_lowercase();
    valid
        .iter()
        .copied()
        .find(|v| *v == wanted)
        .unwrap_or_else(|| {
            error(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid value for {argument}: \"{value}\""),
            )
            .hint(format!("Valid values are: {}.", valid.join(", ")))
            .raise()
        })
}

fn name_arg(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}

pub fn quote_identifier(name: &str) -> String {
    unsafe {
        let c = std::ffi::CString::new(name).expect("identifier without NUL");
        CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr()))
            .to_string_lossy()
            .into_owned()
    }
}

/// A table named in an API call, as the catalogs describe it now.
struct Table {
    oid: pg_sys::Oid,
    /// Unqualified name, for messages (core's messages use the bare relation name too).
    name: String,
    relkind: String,
    temporary: bool,
    unlogged: bool,
    system: bool,
    owned_by_caller: bool,
    may_reference: bool,
}

struct Column {
    attnum: i16,
    name: String,
    not_null: bool,
    type_name: String,
}

impl Table {
    fn describe(oid: pg_sys::Oid) -> Table {
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT c.relname::text, c.relkind::text, c.relpersistence = 't', c.relpersistence = 'u',
                            n.nspname IN ('pg_catalog', 'information_schema')
                              OR n.nspname LIKE 'pg\\_toast%',
                            pg_has_role(c.relowner, 'USAGE'),
                            has_table_privilege(c.oid, 'REFERENCES')
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = $1",
                    None,
                    &[oid.into()],
                )
                .expect("reading pg_class");
            let Some(row) = rows.into_iter().next() else {
                error(
                    ERRCODE_UNDEFINED_TABLE,
                    format!("relation with OID {oid} does not exist"),
                )
                .raise()
            };
            Table {
                oid,
                name: row.get(1).unwrap().unwrap(),
                relkind: row.get(2).unwrap().unwrap(),
                temporary: row.get(3).unwrap().unwrap(),
                unlogged: row.get(4).unwrap().unwrap(),
                system: row.get(5).unwrap().unwrap(),
                owned_by_caller: row.get(6).unwrap().unwrap(),
                may_reference: row.get(7).unwrap().unwrap(),
            }
        })
    }

    /// Soft references join ordinary or partitioned, permanent, user tables.
    fn require_registrable(&self, role: &str) {
        if self.system {
            error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied: \"{}\" is a system catalog", self.name),
            )
            .raise();
        }
        let kind = match self.relkind.as_str() {
            "r" | "p" => None,
            "v" => Some("a view"),
            "m" => Some("a materialized view"),
            "S" => Some("a sequence"),
            "f" => Some("a foreign table"),
            "i" | "I" => Some("an index"),
            "c" => Some("a composite type"),
            "t" => Some("a TOAST table"),
            _ => Some("not a table"),
        };
        if let Some(kind) = kind {
            error(
                ERRCODE_WRONG_OBJECT_TYPE,
                format!("{role} \"{}\" is not a table", self.name),
            )
            .detail(format!(
                "\"{}\" is {kind}; soft references join ordinary or partitioned tables.",
                self.name
            ))
            .raise();
        }
        if self.temporary {
            error(
                ERRCODE_WRONG_OBJECT_TYPE,
                format!("{role} \"{}\" is a temporary table", self.name),
            )
            .detail("Registrations are permanent; a temporary table cannot hold one.")
            .raise();
        }
    }

    fn require_owner(&self) {
        if !self.owned_by_caller {
            error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be owner of table {}", self.name),
            )
            .raise();
        }
    }

    /// As for a native foreign key, the caller needs REFERENCES on the parent.
    fn require_references_privilege(&self) {
        if !self.may_reference {
            error(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for table {}", self.name),
            )
            .detail(
                "Registering a soft reference needs the REFERENCES privilege on the parent table.",
            )
            .raise();
        }
    }

    fn lock(&self, mode: u32) {
        unsafe { pg_sys::LockRelationOid(self.oid, mode as pg_sys::LOCKMODE) };
    }

    fn column(&self, name: &str) -> Column {
        let found = Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT a.attnum, a.attname::text, a.attnotnull, format_type(a.atttypid, a.atttypmod)
                       FROM pg_attribute a
                      WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped",
                    None,
                    &[self.oid.into(), DatumWithOid::from(name)],
                )
                .expect("reading pg_attribute");
            rows.into_iter().next().map(|row| Column {
                attnum: row.get(1).unwrap().unwrap(),
                name: row.get(2).unwrap().unwrap(),
                not_null: row.get(3).unwrap().unwrap(),
                type_name: row.get(4).unwrap().unwrap(),
            })
        });
        match found {
            Some(column) if column.attnum > 0 => column,
            Some(column) => error(
                ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "system column \"{}\" cannot be used in a soft reference",
                    column.name
                ),
            )
            .raise(),
            None => error(
                ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "column \"{name}\" of relation \"{}\" does not exist",
                    self.name
                ),
            )
            .raise(),
        }
    }

    /// The default parent column: the parent's single-column primary key.
    fn primary_key_column(&self) -> Column {
        let key = Spi::get_two_with_args::<i16, String>(
            "SELECT i.indnkeyatts, a.attname::text
               FROM (SELECT) always_one_row
               LEFT JOIN pg_index i ON i.indrelid = $1 AND i.indisprimary
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]",
            &[self.oid.into()],
        )
        .expect("reading pg_index");
        match key {
            (Some(1), Some(name)) => self.column(&name),
            (Some(_), _) => error(
                ERRCODE_INVALID_FOREIGN_KEY,
                format!("primary key of referenced table \"{}\" has more than one column", self.name),
            )
            .hint("Name the parent column: softfk_add(child, column, parent, parent_column => ...).")
            .raise(),
            _ => error(
                ERRCODE_INVALID_FOREIGN_KEY,
                format!("there is no primary key for referenced table \"{}\"", self.name),
            )
            .hint("Name a parent column that has a unique index: softfk_add(child, column, parent, parent_column => ...).")
            .raise(),
        }
    }
}

/// The parent column needs a unique index, and the child type must compare with it through
/// that index's equality operator: the same rule core applies to foreign keys.
fn require_comparable(child: &Table, child_col: &Column, parent: &Table, parent_col: &Column) {
    let nondeterministic = read_one::<String>(
        "SELECT co.collname::text
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
          WHERE (a.attrelid, a.attnum) IN (($1, $2), ($3, $4)) AND NOT co.collisdeterministic
          LIMIT 1",
        &[
            parent.oid.into(),
            parent_col.attnum.into(),
            child.oid.into(),
            child_col.attnum.into(),
        ],
    );
    if let Some(collation) = nondeterministic {
        // The check probes the parent's index with its collation, the purge deletes the child
        // rows equal to the deleted key: under a nondeterministic collation 'alice' matches
        // 'Alice' in one and not the other, and orphans would stay for ever.
        error(
            ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "soft reference from \"{}\" to \"{}\" cannot use a nondeterministic collation",
                child.name, parent.name
            ),
        )
        .detail(format!(
            "Column \"{}\" or \"{}\" uses collation \"{collation}\", which is not deterministic.",
            child_col.name, parent_col.name
        ))
        .hint("Register columns with deterministic collations (such as the database's default).")
        .raise();
    }
    let (index, operator) = Spi::get_two_with_args::<String, String>(
        "SELECT k.unique_index::text, k.operator
           FROM (SELECT) always_one_row
           LEFT JOIN softfk.key_comparison($1, $2, $3, $4) k ON true",
        &[
            parent.oid.into(),
            parent_col.attnum.into(),
            child.oid.into(),
            child_col.attnum.into(),
        ],
    )
    .expect("reading the parent's indexes");
    if index.is_none() {
        error(
            ERRCODE_INVALID_FOREIGN_KEY,
            format!(
                "there is no unique constraint matching given keys for referenced table \"{}\"",
                parent.name
            ),
        )
        .detail(format!(
            "Column \"{}\" needs a unique, non-deferrable, non-partial index of its own.",
            parent_col.name
        ))
        .raise();
    }
    if operator.is_none() {
        error(
            ERRCODE_DATATYPE_MISMATCH,
            format!(
                "soft reference from \"{}\" to \"{}\" cannot be implemented",
                child.name, parent.name
            ),
        )
        .detail(format!(
            "Key columns \"{}\" and \"{}\" are of incompatible types: {} and {}.",
            child_col.name, parent_col.name, child_col.type_name, parent_col.type_name
        ))
        .raise();
    }
}
