from django.db import migrations

from django_softfk.operations import AdoptForeignKey


class Migration(migrations.Migration):
    # The reverse CALLs softfk_revert, a procedure that commits: not inside a transaction.
    atomic = False

    dependencies = [("lms", "0002_soft_references")]

    operations = [AdoptForeignKey("bookmark", "user")]
