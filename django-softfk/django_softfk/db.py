"""Helpers shared by the operations, checks and commands: where pg_softfk lives, how a
Django ``on_delete`` maps to a soft or native action, and how to name things in SQL."""

from django.db.models import deletion

EXTENSION = "pg_softfk"

# The actions softfk_add / softfk_alter accept.
SOFT_ACTIONS = ("cascade", "set null", "archive", "no action")
# The ON DELETE actions softfk_revert's on_delete argument accepts for the native key.
NATIVE_ACTIONS = ("cascade", "set null", "no action", "restrict")
VALIDATE_MODES = ("deferred", "immediate", "off")


class SoftFKError(Exception):
    """A soft reference operation that cannot go ahead as written."""


def extension_schema(connection):
    """The schema pg_softfk is installed in, or None (not PostgreSQL, or not installed)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_catalog.pg_extension e"
            " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = %s",
            [EXTENSION],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def api(connection, name, schema=None):
    """``"schema".name`` for one of pg_softfk's functions or views; raises SoftFKError when
    the extension is not installed in this database."""
    if schema is None:
        schema = extension_schema(connection)
    if schema is None:
        raise SoftFKError(
            "The pg_softfk extension is not installed in database %r (alias %r). Run the "
            "django_softfk.operations.CreateExtension() migration as a superuser, or have an "
            "administrator run CREATE EXTENSION pg_softfk in it (or in template1 before the "
            "database is created)." % (connection.settings_dict.get("NAME"), connection.alias)
        )
    return "%s.%s" % (connection.ops.quote_name(schema), name)


def regclass_text(connection, db_table):
    """The text a ``%s::regclass`` parameter needs for a model's db_table: the name quoted as an
    identifier (mixed case, spaces and quotes survive), resolved through the search_path."""
    return connection.ops.quote_name(db_table)


def on_delete_name(on_delete):
    """Django's name of an on_delete handler, for messages."""
    for name in ("CASCADE", "PROTECT", "RESTRICT", "SET_NULL", "SET_DEFAULT", "DO_NOTHING"):
        if on_delete is getattr(deletion, name):
            return name
    if getattr(on_delete, "deconstruct", None) is not None:
        return "SET(...)"
    return getattr(on_delete, "__name__", repr(on_delete))


def soft_action_for(on_delete):
    """The soft on_delete matching a Django handler, or None when there is no equivalent
    (PROTECT, RESTRICT, SET_DEFAULT, SET(...)): the caller must choose one."""
    if on_delete is deletion.CASCADE:
        return "cascade"
    if on_delete is deletion.SET_NULL:
        return "set null"
    if on_delete is deletion.DO_NOTHING:
        return "no action"
    return None


def native_action_for(on_delete):
    """The native ON DELETE a reverted key gets for a Django handler: what a database delete of
    the parent should do so that SQL and ORM deletes end alike. Django's own constraints are
    NO ACTION; CASCADE and SET_NULL carry over so that a SQL delete keeps behaving as it did
    under the soft reference."""
    if on_delete is deletion.CASCADE:
        return "cascade"
    if on_delete is deletion.SET_NULL:
        return "set null"
    return "no action"


def agrees(on_delete, soft_action):
    """Whether a registration's soft on_delete agrees with the model field's handler, i.e. an
    ORM delete and a SQL delete of the parent end the same way."""
    if on_delete is deletion.DO_NOTHING:
        # The ORM leaves the rows alone; whatever the purge does is the only thing that happens.
        return True
    if on_delete is deletion.CASCADE:
        return soft_action == "cascade"
    if on_delete is deletion.SET_NULL:
        return soft_action == "set null"
    # PROTECT, RESTRICT, SET_DEFAULT, SET(...): the collector acts (or refuses); the database
    # must not do something else behind its back.
    return soft_action == "no action"


def expected_soft_actions(on_delete):
    if on_delete is deletion.DO_NOTHING:
        return SOFT_ACTIONS
    if on_delete is deletion.CASCADE:
        return ("cascade",)
    if on_delete is deletion.SET_NULL:
        return ("set null",)
    return ("no action",)


def registrations(connection, schema=None):
    """Every soft reference visible through the search_path, keyed by (child table name,
    child column): a dict of (parent table, parent column, on_delete, validate)."""
    view = api(connection, "softfk_references", schema)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, r.child_column, p.relname, r.parent_column, r.on_delete,"
            " r.validate FROM %s r"
            " JOIN pg_catalog.pg_class c ON c.oid = r.child"
            " JOIN pg_catalog.pg_class p ON p.oid = r.parent"
            " WHERE pg_catalog.pg_table_is_visible(c.oid)" % view
        )
        return {
            (child, column): (parent, parent_column, on_delete, validate)
            for child, column, parent, parent_column, on_delete, validate in cursor.fetchall()
        }


def print_rows(stdout, cursor, empty_message):
    """Write a cursor's result as an aligned text table."""
    rows = cursor.fetchall()
    if not rows:
        stdout.write(empty_message)
        return rows
    headers = [col[0] for col in cursor.description]
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    stdout.write(" | ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    stdout.write("-+-".join("-" * w for w in widths))
    for row in cells:
        stdout.write(" | ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    stdout.write("(%d row%s)" % (len(rows), "" if len(rows) == 1 else "s"))
    return rows
