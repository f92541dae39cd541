"""Writes that reference a missing user are refused with SQLSTATE 23503.

The check is deferred: inside a TestCase (one transaction, rolled back) it would fire only at a
COMMIT that never happens, so these tests ask for it with SET CONSTRAINTS ... IMMEDIATE."""

from django.db import IntegrityError, connection, transaction
from django.test import TestCase, TransactionTestCase

from .helpers import make_user, references, sql
from .models import CourseEnrollment, ProgramEnrollment

MISSING_USER = 987654321


class OrphanWriteTests(TestCase):
    def orphan_enrollment_error(self):
        with self.assertRaises(IntegrityError) as cm:
            with transaction.atomic():
                CourseEnrollment.objects.create(user_id=MISSING_USER, course_id="course-v1:edX+DemoX")
                sql("SET CONSTRAINTS ALL IMMEDIATE")
        return cm.exception

    def test_orphan_write_raises_integrity_error_with_sqlstate_23503(self):
        error = self.orphan_enrollment_error()
        self.assertEqual(error.__cause__.diag.sqlstate, "23503")
        self.assertIn("lms_courseenrollment", str(error))
        self.assertIn(str(MISSING_USER), str(error))

    def test_error_names_schema_table_and_check_trigger(self):
        # Needs pg_softfk's diag fields (schema_name, table_name, constraint_name).
        diag = self.orphan_enrollment_error().__cause__.diag
        self.assertEqual(diag.schema_name, "public")
        self.assertEqual(diag.table_name, "lms_courseenrollment")
        self.assertIn(diag.constraint_name, references()["lms_courseenrollment", "user_id"][4])

    def test_set_constraints_accepts_the_trigger_name(self):
        insert_trigger = references()["lms_courseenrollment", "user_id"][4]
        name = [t for t in insert_trigger if t.endswith("_ins")][0]
        with self.assertRaises(IntegrityError):
            with transaction.atomic():
                sql("SET CONSTRAINTS %s IMMEDIATE" % connection.ops.quote_name(name))
                CourseEnrollment.objects.create(user_id=MISSING_USER, course_id="x")

    def test_a_user_saved_in_the_same_transaction_counts(self):
        user = make_user("new-learner")
        CourseEnrollment.objects.create(user=user, course_id="course-v1:edX+DemoX")
        sql("SET CONSTRAINTS ALL IMMEDIATE")

    def test_null_key_is_not_checked(self):
        ProgramEnrollment.objects.create(user=None, external_user_key="waiting")
        sql("SET CONSTRAINTS ALL IMMEDIATE")


class DeferredCheckAtCommitTests(TransactionTestCase):
    def test_orphan_write_is_refused_at_commit(self):
        with self.assertRaises(IntegrityError) as cm:
            with transaction.atomic():
                CourseEnrollment.objects.create(user_id=MISSING_USER, course_id="x")
        self.assertEqual(cm.exception.__cause__.diag.sqlstate, "23503")
        self.assertFalse(CourseEnrollment.objects.exists())
