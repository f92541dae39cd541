from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from ...db import SoftFKError, api


class SoftFKCommand(BaseCommand):
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='The database to use. Defaults to the "default" database.',
        )

    def connection_and(self, options, name):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            raise CommandError("Database %r is not PostgreSQL." % options["database"])
        try:
            return connection, api(connection, name)
        except SoftFKError as e:
            raise CommandError(str(e))
