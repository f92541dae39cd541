from django.core.management.base import CommandError

from ...db import print_rows
from ._base import SoftFKCommand


class Command(SoftFKCommand):
    help = (
        "Prints orphan_report(): per soft reference, the child rows whose parent is missing. "
        "Exits with status 1 when there is any orphan (for CI). Scans every registered child "
        "table: run it off-peak on a big database."
    )

    def handle(self, *args, **options):
        connection, fn = self.connection_and(options, "orphan_report")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT child::text AS child, child_column, parent::text AS parent,"
                " parent_column, orphan_rows, orphan_keys, sample_keys, rows_examined,"
                " elapsed_ms FROM %s()" % fn
            )
            rows = print_rows(self.stdout, cursor, "No soft references registered.")
        orphans = [r for r in rows if r[4]]
        if orphans:
            raise CommandError(
                "%d orphan row(s) in %d soft reference(s)."
                % (sum(r[4] for r in orphans), len(orphans)),
                returncode=1,
            )
