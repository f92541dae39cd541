"""AddSoftReference's rules, SQL and quoting."""

from io import StringIO

from django.core.management import call_command
from django.db import connection, models
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import ModelState
from django.test import TestCase

from django_softfk.operations import AddSoftReference, CreateExtension, SoftFKError

from .helpers import references


def state_with(name, field, db_table=None):
    state = MigrationExecutor(connection).loader.project_state()
    options = {"db_table": db_table} if db_table else {}
    state.add_model(
        ModelState("lms", name, [("id", models.AutoField(primary_key=True)), ("user", field)], options)
    )
    return state


class AddSoftReferenceTests(TestCase):
    def add(self, operation, state, create=False):
        with connection.schema_editor() as editor:
            if create:
                editor.create_model(state.apps.get_model("lms", operation.model_name))
            operation.database_forwards("lms", editor, state, state)

    def test_protect_needs_an_explicit_on_delete(self):
        state = state_with("Grade", models.ForeignKey("auth.User", models.PROTECT, db_constraint=False))
        with self.assertRaisesMessage(SoftFKError, "on_delete=PROTECT has no soft equivalent; pass on_delete="):
            self.add(AddSoftReference("grade", "user"), state)

    def test_set_default_and_set_need_an_explicit_on_delete(self):
        for handler in (models.SET_DEFAULT, models.SET(0), models.RESTRICT):
            state = state_with("Grade", models.ForeignKey("auth.User", handler, db_constraint=False, default=0))
            with self.subTest(handler), self.assertRaisesMessage(SoftFKError, "pass on_delete="):
                self.add(AddSoftReference("grade", "user"), state)

    def test_a_field_with_a_database_constraint_is_refused(self):
        state = state_with("Grade", models.ForeignKey("auth.User", models.CASCADE))
        with self.assertRaisesMessage(SoftFKError, "db_constraint=True"):
            self.add(AddSoftReference("grade", "user"), state)

    def test_explicit_on_delete_wins_and_quoted_names_survive(self):
        field = models.ForeignKey("auth.User", models.PROTECT, db_constraint=False, db_column="User ID")
        # Django's quote_name does not escape an embedded double quote: no such names here.
        state = state_with("Grade", field, db_table="Grades of Learners")
        self.add(AddSoftReference("grade", "user", on_delete="no action", validate="immediate"), state, create=True)
        self.assertEqual(
            references()['"Grades of Learners"', "User ID"][:4], ("auth_user", "id", "no action", "immediate")
        )

    def test_reverse_drops_the_registration(self):
        state = MigrationExecutor(connection).loader.project_state()
        operation = AddSoftReference("courseenrollment", "user")
        with connection.schema_editor() as editor:
            operation.database_backwards("lms", editor, state, state)
        self.assertNotIn(("lms_courseenrollment", "user_id"), references())

    def test_sqlmigrate_shows_parameters_not_formatted_identifiers(self):
        out = StringIO()
        call_command("sqlmigrate", "lms", "0002", stdout=out)
        self.assertIn("softfk_add('\"lms_courseenrollment\"'::regclass, 'user_id', '\"auth_user\"'::regclass", out.getvalue())
        self.assertIn("on_delete => 'archive'", out.getvalue())

    def test_create_extension_is_a_no_op_when_present(self):
        state = MigrationExecutor(connection).loader.project_state()
        with connection.schema_editor() as editor:
            CreateExtension().database_forwards("lms", editor, state, state)
