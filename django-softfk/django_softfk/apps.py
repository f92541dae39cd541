from django.apps import AppConfig
from django.core import checks


class SoftFKConfig(AppConfig):
    name = "django_softfk"
    verbose_name = "pg_softfk soft references"

    def ready(self):
        from .checks import check_soft_references

        # Tagged "database": runs under `manage.py check --database <alias>`, `migrate`
        # and the test runner, never without a database.
        checks.register(check_soft_references, checks.Tags.database)
