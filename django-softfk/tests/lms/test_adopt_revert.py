"""AdoptForeignKey and RevertForeignKey: a native key becomes a soft reference and back.

Reverting CALLs softfk_revert, a procedure that commits: these tests run outside a transaction
(TransactionTestCase) and leave the schema as the migrations made it."""

from django.core.management import call_command
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor
from django.test import TestCase, TransactionTestCase

from django_softfk.operations import AdoptForeignKey, RevertForeignKey, SoftFKError

from .helpers import make_user, native_foreign_keys, references, sql
from .models import Bookmark

ADOPTED = ("lms", "0003_adopt_bookmark")
BEFORE = ("lms", "0002_soft_references")


def state_at(node):
    return MigrationExecutor(connection).loader.project_state(node)


class AdoptRevertRoundTripTests(TransactionTestCase):
    def tearDown(self):
        # Whatever happened, leave the database adopted again, as the migrations say.
        if native_foreign_keys("lms_bookmark"):
            if ("lms_bookmark", "user_id") in references():
                sql("SELECT softfk_drop('lms_bookmark', 'user_id')")
            call_command("migrate", "lms", BEFORE[1], verbosity=0)
        call_command("migrate", "lms", verbosity=0)
        super().tearDown()

    def test_migrating_back_puts_djangos_foreign_key_back_and_forward_adopts_it_again(self):
        call_command("migrate", "lms", BEFORE[1], verbosity=0)
        keys = native_foreign_keys("lms_bookmark")
        self.assertEqual(len(keys), 1)
        name, on_delete, deferrable, deferred, validated = keys[0]
        # Django's own constraint, as it was: its name, NO ACTION, DEFERRABLE INITIALLY DEFERRED.
        self.assertTrue(name.startswith("lms_bookmark_user_id_") and name.endswith("_fk_auth_user_id"), name)
        self.assertEqual((on_delete, deferrable, deferred, validated), ("a", True, True, True))
        self.assertNotIn(("lms_bookmark", "user_id"), references())

        call_command("migrate", "lms", verbosity=0)
        self.assertEqual(native_foreign_keys("lms_bookmark"), [])
        self.assertEqual(references()["lms_bookmark", "user_id"][2], "cascade")

    def test_a_refused_revert_leaves_the_soft_reference_as_it_was(self):
        # 'no action' so that no purge touches the orphan; validate off to write it.
        sql("SELECT softfk_alter('lms_bookmark', 'user_id', on_delete => 'no action', validate => 'off')")
        Bookmark.objects.create(user_id=987654321, usage_key="orphan")
        try:
            with self.assertRaises(IntegrityError) as cm:
                call_command("migrate", "lms", BEFORE[1], verbosity=0)
            self.assertEqual(cm.exception.__cause__.diag.sqlstate, "23503")
            self.assertEqual(references()["lms_bookmark", "user_id"][2:4], ("no action", "off"))
            self.assertEqual(native_foreign_keys("lms_bookmark"), [])
        finally:
            Bookmark.objects.all().delete()
            sql("SELECT softfk_alter('lms_bookmark', 'user_id', on_delete => 'cascade', validate => 'deferred')")

    def test_revert_foreign_key_maps_cascade_to_a_native_on_delete_cascade(self):
        before = state_at(ADOPTED)
        after = before.clone()
        operation = RevertForeignKey("bookmark", "user")
        operation.state_forwards("lms", after)
        self.assertTrue(after.models["lms", "bookmark"].fields["user"].db_constraint)
        with connection.schema_editor(atomic=False) as editor:
            operation.database_forwards("lms", editor, before, after)
        self.assertEqual([k[1] for k in native_foreign_keys("lms_bookmark")], ["c"])
        self.assertNotIn(("lms_bookmark", "user_id"), references())
        # A native ON DELETE CASCADE now deletes the bookmark with its user.
        user = make_user("reader")
        Bookmark.objects.create(user=user, usage_key="x")
        sql("DELETE FROM auth_user WHERE id = %s", [user.pk])
        self.assertFalse(Bookmark.objects.exists())

        with connection.schema_editor(atomic=False) as editor:
            operation.database_backwards("lms", editor, after, before)
        self.assertEqual(native_foreign_keys("lms_bookmark"), [])
        self.assertEqual(references()["lms_bookmark", "user_id"][2], "cascade")

    def test_softfk_revert_takes_the_native_on_delete(self):
        # Needs CALL softfk_revert(child, column, on_delete => ...).
        sql("CALL softfk_revert('lms_bookmark', 'user_id', on_delete => 'restrict')")
        self.assertEqual([k[1] for k in native_foreign_keys("lms_bookmark")], ["r"])
        sql("SELECT softfk_adopt('lms_bookmark', 'user_id')")
        sql("SELECT softfk_alter('lms_bookmark', 'user_id', on_delete => 'cascade')")


class NonAtomicTests(TestCase):
    def test_reversing_an_adoption_inside_a_transaction_fails_clearly(self):
        before, after = state_at(BEFORE), state_at(ADOPTED)
        with self.assertRaisesMessage(SoftFKError, "atomic = False"):
            with connection.schema_editor() as editor:
                AdoptForeignKey("bookmark", "user").database_backwards("lms", editor, after, before)

    def test_revert_foreign_key_inside_a_transaction_fails_clearly(self):
        before = state_at(ADOPTED)
        after = before.clone()
        RevertForeignKey("bookmark", "user").state_forwards("lms", after)
        with self.assertRaisesMessage(SoftFKError, "atomic = False"):
            with connection.schema_editor() as editor:
                RevertForeignKey("bookmark", "user").database_forwards("lms", editor, before, after)

    def test_adopt_state_makes_the_field_db_constraint_false(self):
        self.assertTrue(state_at(BEFORE).models["lms", "bookmark"].fields["user"].db_constraint)
        self.assertFalse(state_at(ADOPTED).models["lms", "bookmark"].fields["user"].db_constraint)
