"""Deleting a user removes, nulls or archives what referenced it.

The purge sees only committed deletes, hence TransactionTestCase; the tests run the purge with
softfk_purge() rather than waiting for the background worker."""

from django.db import connection
from django.test import TransactionTestCase

from .helpers import make_user, purge, sql
from .models import Bookmark, CourseEnrollment, ProgramEnrollment, StudentModule


class PurgeTests(TransactionTestCase):
    def enrolled_user(self, username):
        user = make_user(username)
        CourseEnrollment.objects.create(user=user, course_id="course-v1:edX+DemoX")
        ProgramEnrollment.objects.create(user=user, external_user_key="ext-" + username)
        StudentModule.objects.create(student=user, module_state_key="block-v1:edX+DemoX+type@problem+block@1")
        return user

    def assert_purged(self, user_id):
        self.assertFalse(CourseEnrollment.objects.filter(user_id=user_id).exists())
        self.assertEqual(
            list(ProgramEnrollment.objects.values_list("user_id", "external_user_key")),
            [(None, "ext-learner")],
        )
        self.assertFalse(StudentModule.objects.filter(student_id=user_id).exists())

    def test_orm_delete_cascades_and_nulls_in_python_and_the_purge_archives_do_nothing_rows(self):
        user = self.enrolled_user("learner")
        user_id = user.pk
        user.delete()
        # Django's collector did CASCADE and SET_NULL; DO_NOTHING left the StudentModule row.
        self.assertFalse(CourseEnrollment.objects.exists())
        self.assertEqual(ProgramEnrollment.objects.get().user_id, None)
        purge()
        self.assert_purged(user_id)

    def test_sql_delete_then_purge_removes_nulls_and_archives(self):
        user = self.enrolled_user("learner")
        user_id = user.pk
        sql("DELETE FROM auth_user WHERE id = %s", [user_id])
        purge()
        self.assert_purged(user_id)

    def test_adopted_key_purges_like_its_cascade(self):
        user = make_user("reader")
        Bookmark.objects.create(user=user, usage_key="block-v1:x")
        sql("DELETE FROM auth_user WHERE id = %s", [user.pk])
        purge()
        self.assertFalse(Bookmark.objects.exists())

    def archived_then_recreated(self):
        user = self.enrolled_user("learner")
        user_id, username = user.pk, user.username
        sql("DELETE FROM auth_user WHERE id = %s", [user_id])
        purge()
        self.assertFalse(StudentModule.objects.exists())
        # Re-create the parent first: the restored rows are checked.
        make_user(username, id=user_id)
        return user_id

    def test_restore_puts_archived_rows_back_with_a_text_key(self):
        user_id = self.archived_then_recreated()
        self.assertEqual(sql("SELECT softfk_restore('auth_user', %s)", [str(user_id)]), [(1,)])
        self.assertEqual(StudentModule.objects.get().student_id, user_id)

    def test_restore_accepts_an_integer_key(self):
        # Needs softfk_restore(regclass, anyelement): psycopg sends the id as an integer.
        user_id = self.archived_then_recreated()
        self.assertEqual(sql("SELECT softfk_restore('auth_user', %s)", [user_id]), [(1,)])
        self.assertEqual(StudentModule.objects.get().student_id, user_id)

    def test_status_counts_the_purge(self):
        user = self.enrolled_user("learner")
        sql("DELETE FROM auth_user WHERE id = %s", [user.pk])
        purge()
        status = dict(
            sql(
                "SELECT child::text, rows_deleted + rows_nulled + rows_archived"
                " FROM softfk_status WHERE child::text LIKE 'lms_%%'"
            )
        )
        for table in ("lms_courseenrollment", "lms_programenrollment", "lms_studentmodule"):
            with self.subTest(table):
                self.assertGreaterEqual(status[table], 1)
        self.assertTrue(connection.is_usable())
