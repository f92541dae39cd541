from ...db import print_rows
from ._base import SoftFKCommand


class Command(SoftFKCommand):
    help = (
        "Prints the softfk_status view: per soft reference you own, pending keys, rows "
        "deleted / nulled / archived by the purge, and its last error."
    )

    def handle(self, *args, **options):
        connection, view = self.connection_and(options, "softfk_status")
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM %s" % view)
            print_rows(self.stdout, cursor, "No soft references visible to this role.")
