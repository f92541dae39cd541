"""softfk_report, softfk_status and softfk_purge."""

from io import StringIO

from django.core.management import CommandError, call_command
from django.test import TestCase, TransactionTestCase

from .helpers import make_user, sql
from .models import CourseEnrollment


class ReportTests(TestCase):
    def test_report_exits_0_without_orphans(self):
        out = StringIO()
        call_command("softfk_report", stdout=out)
        self.assertIn("lms_courseenrollment", out.getvalue())

    def test_report_exits_1_with_orphans(self):
        # The orphan is not committed, and orphan_report() sees this transaction's rows.
        orphan = CourseEnrollment.objects.create(user_id=987654321, course_id="x")
        out = StringIO()
        with self.assertRaises(CommandError) as cm:
            call_command("softfk_report", stdout=out)
        # TestCase's teardown runs SET CONSTRAINTS ALL IMMEDIATE, which would fire the deferred
        # check on the orphan; a row inserted and deleted in one transaction is not checked.
        orphan.delete()
        self.assertEqual(cm.exception.returncode, 1)
        self.assertIn("1 orphan row(s) in 1 soft reference(s)", str(cm.exception))
        self.assertIn("987654321", out.getvalue())

    def test_status_lists_the_references(self):
        out = StringIO()
        call_command("softfk_status", stdout=out)
        for table in ("lms_courseenrollment", "lms_programenrollment", "lms_studentmodule", "lms_bookmark"):
            self.assertIn(table, out.getvalue())

    def test_unknown_database_alias_is_refused(self):
        with self.assertRaises(Exception):
            call_command("softfk_status", database="nope")


class PurgeCommandTests(TransactionTestCase):
    def test_purge_prints_what_it_did(self):
        user = make_user("learner")
        CourseEnrollment.objects.create(user=user, course_id="x")
        sql("DELETE FROM auth_user WHERE id = %s", [user.pk])
        out = StringIO()
        call_command("softfk_purge", stdout=out)
        self.assertFalse(CourseEnrollment.objects.exists())
        # The background worker may have been first; then there is nothing left to print.
        self.assertTrue("lms_courseenrollment" in out.getvalue() or "Nothing to purge." in out.getvalue())
