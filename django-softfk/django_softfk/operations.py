"""Migration operations for pg_softfk soft references.

- ``CreateExtension()``: ``CREATE EXTENSION IF NOT EXISTS pg_softfk``.
- ``AddSoftReference(model_name, name, on_delete=None, validate="deferred")``: registers a
  ``db_constraint=False`` foreign key's column (``softfk_add``); state unchanged.
- ``AdoptForeignKey(model_name, name, on_delete=None)``: replaces a native foreign key by a soft
  reference (``softfk_adopt``); state: the field becomes ``db_constraint=False``. Its reverse
  runs ``CALL softfk_revert``, which commits: the migration needs ``atomic = False``.
- ``RevertForeignKey(model_name, name, on_delete=None)``: the opposite; needs ``atomic = False``.

Every identifier reaches the server as a query parameter (``%s::regclass``), never formatted
into the SQL text.
"""

from django.db import router, transaction
from django.db.migrations.operations.base import Operation

from .db import (
    NATIVE_ACTIONS,
    SOFT_ACTIONS,
    VALIDATE_MODES,
    SoftFKError,
    api,
    extension_schema,
    native_action_for,
    on_delete_name,
    regclass_text,
    soft_action_for,
)

__all__ = [
    "CreateExtension",
    "AddSoftReference",
    "AdoptForeignKey",
    "RevertForeignKey",
    "SoftFKError",
]


def _reference(app_label, model_name, name, state):
    """(model, field) of a many-to-one / one-to-one field in a migration state."""
    model = state.apps.get_model(app_label, model_name)
    field = model._meta.get_field(name)
    if not (getattr(field, "many_to_one", False) or getattr(field, "one_to_one", False)):
        raise SoftFKError(
            "%s.%s.%s is not a ForeignKey or OneToOneField: only those can be soft references."
            % (app_label, model._meta.object_name, name)
        )
    return model, field


def _label(app_label, model, field):
    return "%s.%s.%s" % (app_label, model._meta.object_name, field.name)


def _soft_action(app_label, model, field, on_delete, operation):
    """The soft on_delete to register: the one given, or the one the field's on_delete maps to."""
    if on_delete is not None:
        on_delete = on_delete.lower()
        if on_delete not in SOFT_ACTIONS:
            raise SoftFKError(
                "%s(on_delete=%r) for %s: on_delete must be one of %s."
                % (operation, on_delete, _label(app_label, model, field), ", ".join(SOFT_ACTIONS))
            )
        return on_delete
    action = soft_action_for(field.remote_field.on_delete)
    if action is None:
        raise SoftFKError(
            "%s for %s: the field's on_delete=%s has no soft equivalent; pass on_delete= "
            "explicitly (one of %s; 'no action' lets the ORM keep enforcing %s while a SQL "
            "delete of the parent leaves the rows for orphan_report())."
            % (
                operation,
                _label(app_label, model, field),
                on_delete_name(field.remote_field.on_delete),
                ", ".join(repr(a) for a in SOFT_ACTIONS),
                on_delete_name(field.remote_field.on_delete),
            )
        )
    return action


def _native_action(app_label, model, field, on_delete, operation):
    if on_delete is not None:
        on_delete = on_delete.lower()
        if on_delete not in NATIVE_ACTIONS:
            raise SoftFKError(
                "%s(on_delete=%r) for %s: a native key's on_delete must be one of %s."
                % (operation, on_delete, _label(app_label, model, field), ", ".join(NATIVE_ACTIONS))
            )
        return on_delete
    return native_action_for(field.remote_field.on_delete)


def _refuse_atomic(schema_editor, what):
    if schema_editor.connection.in_atomic_block and not schema_editor.collect_sql:
        raise SoftFKError(
            "%s runs CALL softfk_revert(...), a procedure that commits between its steps, so it "
            "cannot run inside a transaction. Set `atomic = False` on the migration class (and "
            "do not call it from inside transaction.atomic() or a TestCase)." % what
        )


def _with_db_constraint(field, value):
    name, path, args, kwargs = field.deconstruct()
    if value:
        kwargs.pop("db_constraint", None)
    else:
        kwargs["db_constraint"] = False
    return field.__class__(*args, **kwargs)


def _alter_state_db_constraint(state, app_label, model_name, name, value):
    model_state = state.models[app_label, model_name.lower()]
    field = model_state.fields[name]
    state.alter_field(app_label, model_name.lower(), name, _with_db_constraint(field, value), True)


def _fn(schema_editor, name):
    """The qualified name of a pg_softfk function; SoftFKError if the extension is missing
    (sqlmigrate, which only prints, assumes the usual schema, public)."""
    connection = schema_editor.connection
    schema = extension_schema(connection)
    if schema is None and schema_editor.collect_sql:
        schema = "public"
    return api(connection, name, schema)


def _args(schema_editor, model, field):
    connection = schema_editor.connection
    return [regclass_text(connection, model._meta.db_table), field.column]


def _adopt(schema_editor, model, field, action):
    """softfk_adopt, then softfk_alter to the wanted on_delete, in one transaction: the
    reference is never seen with the action adopt chose from Django's NO ACTION key."""
    connection = schema_editor.connection
    args = _args(schema_editor, model, field)
    with transaction.atomic(using=connection.alias):
        schema_editor.execute(
            "SELECT %s(%%s::regclass, %%s)" % _fn(schema_editor, "softfk_adopt"), args
        )
        schema_editor.execute(
            "SELECT %s(%%s::regclass, %%s, on_delete => %%s)" % _fn(schema_editor, "softfk_alter"),
            args + [action],
        )


def _revert(schema_editor, model, field, native_action):
    """CALL softfk_revert with the native key's on_delete (outside any transaction): refused
    (orphans), it leaves the soft reference exactly as it was."""
    schema_editor.execute(
        "CALL %s(%%s::regclass, %%s, on_delete => %%s)" % _fn(schema_editor, "softfk_revert"),
        _args(schema_editor, model, field) + [native_action],
    )


class CreateExtension(Operation):
    """``CREATE EXTENSION IF NOT EXISTS pg_softfk``.

    Needs a superuser unless the extension is already there (an administrator created it in
    this database, or in template1 before this database was created), in which case it is a
    no-op for any role. Reverse: ``DROP EXTENSION IF EXISTS pg_softfk``, which the server
    refuses while archived rows exist.
    """

    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return
        if router.allow_migrate(schema_editor.connection.alias, app_label):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_softfk")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return
        if router.allow_migrate(schema_editor.connection.alias, app_label):
            schema_editor.execute("DROP EXTENSION IF EXISTS pg_softfk")

    def describe(self):
        return "Creates extension pg_softfk"

    @property
    def migration_name_fragment(self):
        return "create_extension_pg_softfk"


class _FieldOperation(Operation):
    """An operation on one foreign key field, ``model_name.name``: what the three field
    operations share."""

    reversible = True

    def __init__(self, model_name, name, on_delete=None):
        self.model_name = model_name
        self.name = name
        self.on_delete = on_delete

    def _field(self, app_label, schema_editor, state):
        """(model, field) in ``state``, or None where the operation does not apply (not
        PostgreSQL, or the router keeps the model out of this database)."""
        if schema_editor.connection.vendor != "postgresql":
            return None
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return None
        return _reference(app_label, self.model_name, self.name, state)

    def _fragment(self, prefix):
        return "%s_%s_%s" % (prefix, self.model_name.lower(), self.name.lower())


class AddSoftReference(_FieldOperation):
    """Registers ``model_name.name`` (a ``db_constraint=False`` foreign key) as a soft reference
    to the related model's table and column (``softfk_add``). ``on_delete`` defaults to the
    field's: CASCADE -> 'cascade', SET_NULL -> 'set null', DO_NOTHING -> 'no action' (pass
    'archive' or 'cascade' to have the purge act); PROTECT, RESTRICT, SET_DEFAULT and SET(...)
    need an explicit ``on_delete``. The migration state does not change."""

    def __init__(self, model_name, name, on_delete=None, validate="deferred"):
        super().__init__(model_name, name, on_delete)
        self.validate = validate

    def state_forwards(self, app_label, state):
        pass

    def _action(self, app_label, model, field):
        """The soft on_delete to register, after checking the field and the arguments."""
        if field.db_constraint:
            raise SoftFKError(
                "AddSoftReference for %s: the field has a database constraint "
                "(db_constraint=True). Either set db_constraint=False on the field first (an "
                "AlterField before this operation drops the constraint), or use "
                "AdoptForeignKey to replace the constraint by a soft reference."
                % _label(app_label, model, field)
            )
        action = _soft_action(app_label, model, field, self.on_delete, "AddSoftReference")
        if self.validate not in VALIDATE_MODES:
            raise SoftFKError(
                "AddSoftReference(validate=%r) for %s: validate must be one of %s."
                % (self.validate, _label(app_label, model, field), ", ".join(VALIDATE_MODES))
            )
        return action

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        target = self._field(app_label, schema_editor, to_state)
        if target is None:
            return
        model, field = target
        action = self._action(app_label, model, field)
        connection = schema_editor.connection
        parent = field.related_model
        schema_editor.execute(
            "SELECT %s(%%s::regclass, %%s, %%s::regclass, %%s, on_delete => %%s, validate => %%s)"
            % _fn(schema_editor, "softfk_add"),
            [
                regclass_text(connection, model._meta.db_table),
                field.column,
                regclass_text(connection, parent._meta.db_table),
                field.target_field.column,
                action,
                self.validate,
            ],
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        target = self._field(app_label, schema_editor, to_state)
        if target is None:
            return
        model, field = target
        schema_editor.execute(
            "SELECT %s(%%s::regclass, %%s)" % _fn(schema_editor, "softfk_drop"),
            _args(schema_editor, model, field),
        )

    def describe(self):
        return "Register %s.%s as a soft reference%s" % (
            self.model_name,
            self.name,
            " (on_delete=%s)" % self.on_delete if self.on_delete else "",
        )

    @property
    def migration_name_fragment(self):
        return self._fragment("softfk")


class AdoptForeignKey(_FieldOperation):
    """Replaces the native foreign key of ``model_name.name`` by a soft reference
    (``softfk_adopt``, then ``softfk_alter`` to the field's on_delete, in one transaction). State:
    the field becomes ``db_constraint=False`` (write that in the model too).

    The reverse runs ``CALL softfk_revert(..., on_delete => 'no action')``, putting Django's own
    constraint back as it was; the procedure commits, so the migration must say
    ``atomic = False``."""

    def state_forwards(self, app_label, state):
        _alter_state_db_constraint(state, app_label, self.model_name, self.name, False)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        target = self._field(app_label, schema_editor, to_state)
        if target is None:
            return
        model, field = target
        action = _soft_action(app_label, model, field, self.on_delete, "AdoptForeignKey")
        _adopt(schema_editor, model, field, action)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        target = self._field(app_label, schema_editor, to_state)
        if target is None:
            return
        _refuse_atomic(schema_editor, "Reversing AdoptForeignKey")
        model, field = target
        # Django creates its foreign keys without ON DELETE (NO ACTION): put that one back.
        _revert(schema_editor, model, field, "no action")

    def describe(self):
        return "Adopt the foreign key %s.%s as a soft reference" % (self.model_name, self.name)

    @property
    def migration_name_fragment(self):
        return self._fragment("adopt")


class RevertForeignKey(_FieldOperation):
    """Puts a native foreign key back in place of the soft reference on ``model_name.name``
    (``CALL softfk_revert``). The native key's ON DELETE is ``on_delete`` when given
    ('cascade', 'set null', 'no action', 'restrict'), else the field's: CASCADE -> 'cascade',
    SET_NULL -> 'set null', anything else -> 'no action' (pass ``on_delete='no action'`` for
    exactly the constraint Django itself creates). State: ``db_constraint=True``. The migration
    must say ``atomic = False``. Reverse: ``AdoptForeignKey``."""

    def state_forwards(self, app_label, state):
        _alter_state_db_constraint(state, app_label, self.model_name, self.name, True)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        target = self._field(app_label, schema_editor, to_state)
        if target is None:
            return
        _refuse_atomic(schema_editor, "RevertForeignKey")
        model, field = target
        native = _native_action(app_label, model, field, self.on_delete, "RevertForeignKey")
        _revert(schema_editor, model, field, native)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        target = self._field(app_label, schema_editor, to_state)
        if target is None:
            return
        model, field = target
        action = _soft_action(app_label, model, field, None, "Reversing RevertForeignKey")
        _adopt(schema_editor, model, field, action)

    def describe(self):
        return "Revert the soft reference %s.%s to a native foreign key" % (
            self.model_name,
            self.name,
        )

    @property
    def migration_name_fragment(self):
        return self._fragment("revert")
