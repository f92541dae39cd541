//! Registrations: which child columns are soft references to which parent keys, as
//! `softfk.reference` records them (sql/bootstrap.sql), resolved against the catalogs as
//! they are now. Everything above reads registrations through [`load`] or [`load_each`].

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

use crate::postgres::error::error;
use crate::postgres::roles::as_extension_owner;
use crate::postgres::spi::{read_one, Columns};

/// What happens to child rows once their parent row is deleted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnDelete {
    Cascade,
    SetNull,
    Archive,
    NoAction,
}

impl OnDelete {
    /// As SQL spells it: softfk_add's argument, `softfk.reference.on_delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Cascade => "cascade",
            OnDelete::SetNull => "set null",
            OnDelete::Archive => "archive",
            OnDelete::NoAction => "no action",
        }
    }

    /// A native foreign key's `ON DELETE` action (`pg_constraint.confdeltype`) as a soft
    /// reference's; None for SET DEFAULT, which a soft reference cannot do. RESTRICT is
    /// NO ACTION checked at once: for a soft reference both purge nothing.
    pub fn of_foreign_key(confdeltype: u8) -> Option<OnDelete> {
        match confdeltype {
            b'c' => Some(OnDelete::Cascade),
            b'n' => Some(OnDelete::SetNull),
            b'a' | b'r' => Some(OnDelete::NoAction),
            _ => None,
        }
    }

    /// The native foreign key's `ON DELETE` clause that does the same; None for 'archive',
    /// which has none (a foreign key cannot keep the rows it deletes).
    pub fn foreign_key_action(self) -> Option<&'static str> {
        match self {
            OnDelete::Cascade => Some("CASCADE"),
            OnDelete::SetNull => Some("SET NULL"),
            OnDelete::NoAction => Some("NO ACTION"),
            OnDelete::Archive => None,
        }
    }
}

/// When a child key is checked against the parent on write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Validate {
    /// At commit (a deferred constraint trigger), the default.
    Deferred,
    /// At the end of each statement.
    Immediate,
    /// Not checked; the purge and the report still apply.
    Off,
}

impl Validate {
    /// As SQL spells it: softfk_add's argument, `softfk.reference.validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Validate::Deferred => "deferred",
            Validate::Immediate => "immediate",
            Validate::Off => "off",
        }
    }
}

/// One of a fixed set of words: an API argument (`on_delete`, `validate`), matched without
/// regard to case or surrounding spaces, or a registry column, which its CHECK constraint
/// keeps to the same words.
pub trait Word: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    /// The value `word` names, if any.
    fn parse(word: &str) -> Option<Self> {
        let wanted = word.trim().to_lowercase();
        Self::ALL.iter().copied().find(|v| v.as_str() == wanted)
    }

    /// The value the API argument `argument` names; 22023 listing the valid words otherwise.
    fn argument(argument: &str, word: &str) -> Self {
        Self::parse(word).unwrap_or_else(|| {
            let valid: Vec<_> = Self::ALL.iter().map(|v| v.as_str()).collect();
            error(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid value for {argument}: \"{word}\""),
            )
            .hint(format!("Valid values are: {}.", valid.join(", ")))
            .raise()
        })
    }

    /// A value read from the registry (whose CHECK constraint admits only these words).
    fn stored(word: &str) -> Self {
        Self::parse(word).unwrap_or_else(|| unreachable!("the registry holds '{word}'"))
    }
}

impl Word for OnDelete {
    const ALL: &'static [Self] = &[
        OnDelete::Cascade,
        OnDelete::SetNull,
        OnDelete::Archive,
        OnDelete::NoAction,
    ];
    fn as_str(self) -> &'static str {
        OnDelete::as_str(self)
    }
}

impl Word for Validate {
    const ALL: &'static [Self] = &[Validate::Deferred, Validate::Immediate, Validate::Off];
    fn as_str(self) -> &'static str {
        Validate::as_str(self)
    }
}

/// A registration, resolved against the current catalogs: everything the query builder
/// (src/catalog/query.rs) needs, with identifiers already quoted.
pub struct Reference {
    pub id: i64,
    pub on_delete: OnDelete,
    /// `schema.table` of the child, quoted.
    pub child_table: String,
    /// true for a partitioned child (scanned with its partitions, not `ONLY`).
    pub child_partitioned: bool,
    /// The child column's current name, unquoted.
    pub child_column: String,
    /// The same, quoted for SQL.
    pub child_column_quoted: String,
    pub parent_table: String,
    pub parent_partitioned: bool,
    pub parent_column: String,
    pub parent_column_quoted: String,
    /// The parent key's type (a domain's base type), schema-qualified and quoted.
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

impl Reference {
    /// The registration's id, whether it resolved or not.
    pub fn id_of(loaded: &Result<Reference, Unusable>) -> i64 {
        match loaded {
            Ok(reference) => reference.id,
            Err(unusable) => unusable.id,
        }
    }
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
        SELECT r.id, r.on_delete,
               r.child_table::oid AS child_oid,
               format('%I.%I', cn.nspname, c.relname) AS child_table,
               c.relkind = 'p' AS child_partitioned,
               ca.attname::text AS child_column, quote_ident(ca.attname) AS child_column_quoted,
               format_type(ca.atttypid, ca.atttypmod) AS child_type_name,
               r.parent_table::oid AS parent_oid,
               format('%I.%I', pn.nspname, p.relname) AS parent_table,
               p.relkind = 'p' AS parent_partitioned,
               pa.attname::text AS parent_column, quote_ident(pa.attname) AS parent_column_quoted,
               format_type(pa.atttypid, pa.atttypmod) AS parent_type_name,
               k.operator,
               (SELECT format('%I.%I', tn.nspname, t.typname)
                  FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace
                 WHERE k.child_cast IS NOT NULL AND t.oid = k.right_type) AS child_cast,
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
                 WHERE base.typtype <> 'd') AS parent_type
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
         ORDER BY child_table, child_column";
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
                let text = |name: &str| row.column::<String>(name).unwrap_or_default();
                let id = row.column::<i64>("id").expect("reference.id");
                let on_delete = OnDelete::stored(&text("on_delete"));
                let Some(operator) = row.column::<String>("operator") else {
                    // The key types were changed (ALTER COLUMN TYPE) or the unique index
                    // dropped after registering.
                    return Err(Unusable {
                        id,
                        on_delete,
                        message: format!(
                            "soft reference {}.{} -> {}.{} can no longer be checked",
                            text("child_table"),
                            text("child_column_quoted"),
                            text("parent_table"),
                            text("parent_column_quoted"),
                        ),
                        detail: format!(
                            "The parent column needs a unique index comparable with the child column; types are {} and {}.",
                            text("child_type_name"),
                            text("parent_type_name"),
                        ),
                    });
                };
                Ok(Reference {
                    id,
                    on_delete,
                    child_oid: row.column("child_oid").expect("reference.child_table"),
                    child_table: text("child_table"),
                    child_partitioned: row.column("child_partitioned").unwrap_or(false),
                    child_column: text("child_column"),
                    child_column_quoted: text("child_column_quoted"),
                    parent_oid: row.column("parent_oid").expect("reference.parent_table"),
                    parent_table: text("parent_table"),
                    parent_partitioned: row.column("parent_partitioned").unwrap_or(false),
                    parent_column: text("parent_column"),
                    parent_column_quoted: text("parent_column_quoted"),
                    parent_type: text("parent_type"),
                    operator,
                    child_cast: row.column("child_cast"),
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

/// 42704: the column has no soft reference.
pub fn not_registered(table: &str, column: &str) -> ! {
    error(
        ERRCODE_UNDEFINED_OBJECT,
        format!("column \"{column}\" of table \"{table}\" has no soft reference"),
    )
    .hint("SELECT * FROM softfk_references lists the registered ones.")
    .raise()
}
