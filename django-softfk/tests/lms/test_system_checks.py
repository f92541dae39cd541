"""softfk.W001 and softfk.E002 compare the models with the registrations."""

from io import StringIO

from django.conf import settings
from django.core import checks
from django.core.management import call_command
from django.db import models
from django.test import TestCase
from django.test.utils import isolate_apps

from django_softfk.checks import check_models


class SystemCheckTests(TestCase):
    databases = {"default"}

    def test_the_project_passes(self):
        self.assertEqual(checks.run_checks(tags=[checks.Tags.database], databases=["default"]), [])
        call_command("check", databases=["default"], fail_level="WARNING", stdout=StringIO())

    def test_checks_are_database_checks(self):
        # Without a database they do not run (and do not connect).
        ids = {e.id for e in checks.run_checks(include_deployment_checks=False)}
        self.assertFalse({i for i in ids if i.startswith("softfk.")})

    @isolate_apps("lms")
    def test_w001_unregistered_user_reference_without_constraint(self):
        class Certificate(models.Model):
            user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_constraint=False)

            class Meta:
                app_label = "lms"
                db_table = "lms_certificate"

        messages = check_models([Certificate], ["default"])
        self.assertEqual([m.id for m in messages], ["softfk.W001"])
        self.assertIs(messages[0].obj, Certificate._meta.get_field("user"))
        self.assertIn("AddSoftReference('certificate', 'user')", messages[0].hint)

    @isolate_apps("lms")
    def test_no_w001_for_a_native_key(self):
        class Certificate(models.Model):
            user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)

            class Meta:
                app_label = "lms"
                db_table = "lms_certificate"

        self.assertEqual(check_models([Certificate], ["default"]), [])

    @isolate_apps("lms")
    def test_e002_on_delete_disagrees_with_registration(self):
        # Same table and column as CourseEnrollment.user, registered 'cascade'.
        class CourseEnrollment(models.Model):
            user = models.ForeignKey(
                settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, db_constraint=False
            )

            class Meta:
                app_label = "lms"
                db_table = "lms_courseenrollment"

        messages = check_models([CourseEnrollment], ["default"])
        self.assertEqual([m.id for m in messages], ["softfk.E002"])
        self.assertIn("SET_NULL", messages[0].msg)
        self.assertIn("'cascade'", messages[0].msg)
        self.assertEqual(messages[0].level, checks.ERROR)

    @isolate_apps("lms")
    def test_e002_cascade_field_registered_as_archive(self):
        # With CASCADE the collector deletes the rows in Python: nothing would be archived.
        class StudentModule(models.Model):
            student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_constraint=False)

            class Meta:
                app_label = "lms"
                db_table = "lms_studentmodule"

        messages = check_models([StudentModule], ["default"])
        self.assertEqual([m.id for m in messages], ["softfk.E002"])
        self.assertIn("DO_NOTHING", messages[0].hint)

    @isolate_apps("lms")
    def test_do_nothing_agrees_with_any_registration(self):
        class StudentModule(models.Model):
            student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False)

            class Meta:
                app_label = "lms"
                db_table = "lms_studentmodule"

        self.assertEqual(check_models([StudentModule], ["default"]), [])
