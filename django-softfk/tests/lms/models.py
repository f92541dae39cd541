"""Open edX-shaped models referencing auth.User, each a way of living without a native key."""

from django.conf import settings
from django.db import models


class CourseEnrollment(models.Model):
    # Registered with AddSoftReference: on_delete 'cascade' taken from the field.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_constraint=False)
    course_id = models.CharField(max_length=255)


class ProgramEnrollment(models.Model):
    # Registered with AddSoftReference: on_delete 'set null' taken from the field.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="program_enrollments",
    )
    external_user_key = models.CharField(max_length=255, blank=True)


class StudentModule(models.Model):
    # DO_NOTHING: the ORM leaves the rows to the purge, which archives them.
    student = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False
    )
    module_state_key = models.CharField(max_length=255)
    state = models.TextField(default="{}")


class Bookmark(models.Model):
    # Created with a native foreign key (0001), adopted by 0003_adopt_bookmark.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_constraint=False)
    usage_key = models.CharField(max_length=255)
