from django.contrib.auth import get_user_model
from django.db import connection


def sql(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def references():
    """{(child table, column): (parent table, parent column, on_delete, validate, triggers)}"""
    return {
        (child, column): (parent, parent_column, on_delete, validate, triggers)
        for child, column, parent, parent_column, on_delete, validate, triggers in sql(
            "SELECT child::text, child_column::text, parent::text, parent_column::text,"
            " on_delete, validate, check_triggers::text[] FROM softfk_references"
        )
    }


def native_foreign_keys(table):
    """[(name, on_delete code, deferrable, deferred, validated)] of table's enforced foreign
    keys (on PostgreSQL 18, softfk_adopt keeps the adopted key NOT ENFORCED: catalog only)."""
    return sql(
        "SELECT conname::text, confdeltype::text, condeferrable, condeferred, convalidated"
        " FROM pg_constraint WHERE contype = 'f' AND conrelid = %s::regclass"
        " AND softfk.foreign_key_is_enforced(oid) ORDER BY 1",
        [table],
    )


def purge():
    """Runs the purge now (the test role was granted EXECUTE on softfk_purge() by run.sh)."""
    return sql("SELECT child::text, child_column, on_delete, rows FROM softfk_purge()")


def make_user(username, **kwargs):
    return get_user_model().objects.create(username=username, **kwargs)
