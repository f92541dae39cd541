from django.conf import settings
from django.db import migrations, models

import django_softfk.operations


class Migration(migrations.Migration):
    initial = True

    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [
        # A no-op here: run.sh created the extension in template1, so every test database has
        # it, and the non-superuser test role never needs to create it.
        django_softfk.operations.CreateExtension(),
        migrations.CreateModel(
            name="CourseEnrollment",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("course_id", models.CharField(max_length=255)),
                ("user", models.ForeignKey(db_constraint=False, on_delete=models.deletion.CASCADE, to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name="ProgramEnrollment",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("external_user_key", models.CharField(blank=True, max_length=255)),
                ("user", models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=models.deletion.SET_NULL, related_name="program_enrollments", to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name="StudentModule",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("module_state_key", models.CharField(max_length=255)),
                ("state", models.TextField(default="{}")),
                ("student", models.ForeignKey(db_constraint=False, on_delete=models.deletion.DO_NOTHING, to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name="Bookmark",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("usage_key", models.CharField(max_length=255)),
                # A native foreign key, as Django creates it.
                ("user", models.ForeignKey(on_delete=models.deletion.CASCADE, to=settings.AUTH_USER_MODEL)),
            ],
        ),
    ]
