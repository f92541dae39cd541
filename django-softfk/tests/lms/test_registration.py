"""The migrations registered each column as a soft reference with the right on_delete."""

from django.core.management import call_command
from django.test import TestCase

from .helpers import native_foreign_keys, references


class RegistrationTests(TestCase):
    def test_add_soft_reference_takes_on_delete_from_the_field(self):
        refs = references()
        self.assertEqual(refs["lms_courseenrollment", "user_id"][:4], ("auth_user", "id", "cascade", "deferred"))
        self.assertEqual(refs["lms_programenrollment", "user_id"][:4], ("auth_user", "id", "set null", "deferred"))

    def test_do_nothing_field_registered_as_archive_when_asked(self):
        self.assertEqual(references()["lms_studentmodule", "student_id"][2], "archive")

    def test_adopted_foreign_key_is_a_soft_reference_with_the_fields_on_delete(self):
        # softfk_adopt chose 'no action' from Django's key; the operation set the field's CASCADE.
        self.assertEqual(references()["lms_bookmark", "user_id"][:4], ("auth_user", "id", "cascade", "deferred"))
        self.assertEqual(native_foreign_keys("lms_bookmark"), [])

    def test_each_registration_has_check_triggers(self):
        for key, ref in references().items():
            with self.subTest(key):
                self.assertEqual(len(ref[4]), 2)

    def test_makemigrations_sees_no_change_after_adoption(self):
        # AdoptForeignKey's state says db_constraint=False, as the model file does.
        call_command("makemigrations", "lms", check=True, dry_run=True, verbosity=0)
