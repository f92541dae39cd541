-- An LMS-shaped database, named and shaped like Open edX's tables that reference auth_user
-- (see the seeds: CourseEnrollment, BlockCompletion, Bookmark, StudentModule, ProgramEnrollment).
-- Like a real Open edX database after `db_constraint=False`, it has no foreign keys to
-- auth_user, and some users were deleted without cleaning up after them.

CREATE EXTENSION pg_softfk;

CREATE TABLE auth_user (
    id           serial PRIMARY KEY,
    username     varchar(150) NOT NULL UNIQUE,
    email        varchar(254) NOT NULL,
    is_active    boolean NOT NULL DEFAULT true,
    date_joined  timestamptz NOT NULL DEFAULT now(),
    last_login   timestamptz
);

CREATE TABLE student_courseenrollment (
    id         serial PRIMARY KEY,
    user_id    integer NOT NULL,
    course_id  varchar(255) NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    is_active  boolean NOT NULL DEFAULT true,
    mode       varchar(100) NOT NULL DEFAULT 'audit',
    UNIQUE (user_id, course_id)
);

CREATE TABLE completion_blockcompletion (
    id           bigserial PRIMARY KEY,
    user_id      integer NOT NULL,
    context_key  varchar(255) NOT NULL,
    block_key    varchar(255) NOT NULL,
    block_type   varchar(64) NOT NULL,
    completion   double precision NOT NULL,
    created      timestamptz NOT NULL DEFAULT now(),
    modified     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (context_key, block_key, user_id)
);
CREATE INDEX ON completion_blockcompletion (user_id);

CREATE TABLE bookmarks_bookmark (
    id          serial PRIMARY KEY,
    user_id     integer NOT NULL,
    course_key  varchar(255) NOT NULL,
    usage_key   varchar(255) NOT NULL,
    path        jsonb NOT NULL DEFAULT '[]',
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, usage_key)
);

CREATE TABLE courseware_studentmodule (
    id           bigserial PRIMARY KEY,
    student_id   integer NOT NULL,
    module_id    varchar(255) NOT NULL,
    course_id    varchar(255) NOT NULL,
    module_type  varchar(32) NOT NULL DEFAULT 'problem',
    state        text,
    grade        double precision,
    max_grade    double precision,
    created      timestamptz NOT NULL DEFAULT now(),
    modified     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (student_id, module_id, course_id)
);

-- ProgramEnrollment: user is nullable (an enrollment not yet realized is known only by its
-- external_user_key), with two unique constraints (seed 003). NULL user_id is not an orphan.
CREATE TABLE program_enrollments_programenrollment (
    id                 serial PRIMARY KEY,
    user_id            integer,
    external_user_key  varchar(255),
    program_uuid       uuid NOT NULL,
    curriculum_uuid    uuid NOT NULL,
    status             varchar(9) NOT NULL DEFAULT 'enrolled',
    created            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, program_uuid, curriculum_uuid),
    UNIQUE (external_user_key, program_uuid, curriculum_uuid)
);

-- 1,000 learners, each enrolled in up to three of ten courses, with activity in each.
INSERT INTO auth_user (username, email)
SELECT 'learner' || g, 'learner' || g || '@example.org' FROM generate_series(1, 1000) g;

INSERT INTO student_courseenrollment (user_id, course_id, mode)
SELECT u.id, 'course-v1:edX+C' || c || '+2026', CASE WHEN c % 3 = 0 THEN 'verified' ELSE 'audit' END
  FROM auth_user u, generate_series(0, 9) c
 WHERE (u.id + c) % 4 = 0;

INSERT INTO completion_blockcompletion (user_id, context_key, block_key, block_type, completion)
SELECT e.user_id, e.course_id, 'block-v1:' || e.course_id || '+type@html+block@b' || b, 'html', 1.0
  FROM student_courseenrollment e, generate_series(1, 5) b;

INSERT INTO bookmarks_bookmark (user_id, course_key, usage_key)
SELECT e.user_id, e.course_id, 'block-v1:' || e.course_id || '+type@vertical+block@v1'
  FROM student_courseenrollment e WHERE e.user_id % 5 = 0;

INSERT INTO courseware_studentmodule (student_id, module_id, course_id, grade, max_grade)
SELECT e.user_id, 'block-v1:' || e.course_id || '+type@problem+block@p' || p, e.course_id, p % 2, 1
  FROM student_courseenrollment e, generate_series(1, 3) p;

INSERT INTO program_enrollments_programenrollment (user_id, external_user_key, program_uuid, curriculum_uuid)
SELECT CASE WHEN g % 4 = 0 THEN NULL ELSE g END,           -- a quarter not realized yet
       'ext-' || g,
       '11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222'
  FROM generate_series(1, 200) g;

-- Twelve accounts are deleted the way an application without foreign keys deletes them:
-- the user row goes, the rows that referenced it stay behind.
DELETE FROM auth_user WHERE id IN (4, 8, 12, 40, 44, 100, 104, 120, 150, 155, 160, 600);

-- Give the references back their integrity, without the locks of a native FK.
SELECT softfk_add('student_courseenrollment', 'user_id', 'auth_user');
SELECT softfk_add('completion_blockcompletion', 'user_id', 'auth_user');
SELECT softfk_add('bookmarks_bookmark', 'user_id', 'auth_user');
SELECT softfk_add('courseware_studentmodule', 'student_id', 'auth_user');
SELECT softfk_add('program_enrollments_programenrollment', 'user_id', 'auth_user', on_delete => 'set null');

ANALYZE;
