from django.db import migrations

from django_softfk.operations import AddSoftReference


class Migration(migrations.Migration):
    dependencies = [("lms", "0001_initial")]

    operations = [
        AddSoftReference("courseenrollment", "user"),  # CASCADE -> 'cascade'
        AddSoftReference("programenrollment", "user"),  # SET_NULL -> 'set null'
        AddSoftReference("studentmodule", "student", on_delete="archive"),  # DO_NOTHING
    ]
