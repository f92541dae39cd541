"""System checks comparing the models with pg_softfk's registrations.

- softfk.W001: a ForeignKey / OneToOneField to settings.AUTH_USER_MODEL with
  db_constraint=False whose column has no soft reference: nothing checks its writes or purges
  its rows when a user is deleted in SQL.
- softfk.E002: a field whose on_delete disagrees with its registration (CASCADE registered as
  'set null', ...): an ORM delete and a SQL delete of the parent would end differently.

Database checks (tag "database"): they run under `manage.py check --database <alias>`,
`migrate` and the test runner. Skipped silently for a database that is not PostgreSQL or has no
pg_softfk extension.
"""

from django.apps import apps as global_apps
from django.conf import settings
from django.core import checks
from django.db import connections, router

from .db import agrees, expected_soft_actions, extension_schema, on_delete_name, registrations


def check_soft_references(app_configs=None, databases=None, **kwargs):
    if app_configs is None:
        models = global_apps.get_models()
    else:
        models = [m for app_config in app_configs for m in app_config.get_models()]
    return check_models(models, databases)


def _reference_fields(model):
    opts = model._meta
    if opts.proxy or opts.swapped:
        return
    for field in opts.local_fields:
        if not field.concrete or field.remote_field is None:
            continue
        if getattr(field, "many_to_one", False) or getattr(field, "one_to_one", False):
            yield field


def _is_user_model(model):
    if isinstance(model, str):
        return model.lower() == settings.AUTH_USER_MODEL.lower()
    return model._meta.label_lower == settings.AUTH_USER_MODEL.lower()


def check_models(models, databases):
    """The W001 / E002 messages for these models against each database alias given."""
    errors = []
    models = list(models)
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        schema = extension_schema(connection)
        if schema is None:
            continue
        registered = registrations(connection, schema)
        for model in models:
            if not router.allow_migrate_model(alias, model):
                continue
            table = model._meta.db_table
            for field in _reference_fields(model):
                label = "%s.%s" % (model._meta.label, field.name)
                registration = registered.get((table, field.column))
                if registration is None:
                    if not field.db_constraint and _is_user_model(field.remote_field.model):
                        errors.append(
                            checks.Warning(
                                "%s references %s with db_constraint=False, but %s.%s has no "
                                "soft reference in database %r: nothing checks its writes or "
                                "purges its rows after a SQL delete of a user."
                                % (label, settings.AUTH_USER_MODEL, table, field.column, alias),
                                hint="Register it in a migration with "
                                "django_softfk.operations.AddSoftReference(%r, %r)."
                                % (model._meta.model_name, field.name),
                                obj=field,
                                id="softfk.W001",
                            )
                        )
                    continue
                soft_action = registration[2]
                on_delete = field.remote_field.on_delete
                if not agrees(on_delete, soft_action):
                    errors.append(
                        checks.Error(
                            "%s has on_delete=%s, but its soft reference %s.%s is registered "
                            "with on_delete %r in database %r: deleting the parent through the "
                            "ORM and in SQL would end differently."
                            % (
                                label,
                                on_delete_name(on_delete),
                                table,
                                field.column,
                                soft_action,
                                alias,
                            ),
                            hint="Make them agree: change the field, or run "
                            "SELECT softfk_alter(%r, %r, on_delete => %r) in a migration%s."
                            % (
                                table,
                                field.column,
                                expected_soft_actions(on_delete)[0],
                                " ('archive' needs on_delete=DO_NOTHING: with CASCADE the ORM "
                                "deletes the rows before the database sees the parent go)"
                                if soft_action == "archive"
                                else "",
                            ),
                            obj=field,
                            id="softfk.E002",
                        )
                    )
    return errors
