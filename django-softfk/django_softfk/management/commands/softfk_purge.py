from django.core.management.base import CommandError
from django.db import DatabaseError, transaction

from ...db import print_rows
from ._base import SoftFKCommand


class Command(SoftFKCommand):
    help = (
        "Runs softfk_purge() now: applies each soft reference's on_delete to the rows of "
        "deleted parents, and prints what it deleted, nulled or archived. Needs EXECUTE on "
        "softfk_purge() (the extension's owner grants it)."
    )

    def handle(self, *args, **options):
        connection, fn = self.connection_and(options, "softfk_purge")
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute("SELECT * FROM %s()" % fn)
                print_rows(self.stdout, cursor, "Nothing to purge.")
        except DatabaseError as e:
            cause = getattr(e, "__cause__", None)
            sqlstate = getattr(getattr(cause, "diag", None), "sqlstate", None) or getattr(
                cause, "pgcode", None
            )
            if sqlstate == "42501":
                raise CommandError(
                    "%s\nHINT: the extension's owner must run GRANT EXECUTE ON FUNCTION "
                    "softfk_purge() TO <this role>." % e
                )
            raise
