-- softfk_discover: every column that references a parent, found in the catalogs alone.
CREATE EXTENSION pg_softfk;
SET client_min_messages = warning;

CREATE TABLE auth_user (id int PRIMARY KEY, username text UNIQUE NOT NULL,
                        manager_id int REFERENCES auth_user ON DELETE SET NULL,
                        created_by_id int);
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES auth_user ON DELETE CASCADE);
CREATE INDEX ON enrollment (user_id);
CREATE TABLE bookmark (id serial PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE SET NULL);
CREATE TABLE grade (id serial PRIMARY KEY, user_id int REFERENCES auth_user ON DELETE RESTRICT);
CREATE TABLE note (id serial PRIMARY KEY, user_id int REFERENCES auth_user);
CREATE TABLE badge (id serial PRIMARY KEY, user_id int DEFAULT 0 REFERENCES auth_user ON DELETE SET DEFAULT);
-- A foreign key to a unique column that is not the primary key.
CREATE TABLE mention (id serial PRIMARY KEY, username text REFERENCES auth_user (username) ON DELETE CASCADE);
-- A multi-column foreign key.
ALTER TABLE auth_user ADD UNIQUE (id, username);
CREATE TABLE membership (user_id int, username text, FOREIGN KEY (user_id, username) REFERENCES auth_user (id, username));
-- A partitioned child: listed once, not per partition.
CREATE TABLE login (id serial, user_id int REFERENCES auth_user ON DELETE CASCADE, at date) PARTITION BY RANGE (at);
CREATE TABLE login_2026 PARTITION OF login FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
-- Candidates: no constraint, named and typed like a reference to the users table.
CREATE TABLE completion (id serial PRIMARY KEY, user_id bigint, course_id text);
CREATE TABLE certificate (id serial PRIMARY KEY, student_id int, issued_by_id int, history_user_id int);
-- Not candidates: the wrong type, or a name that says nothing.
CREATE TABLE survey (id serial PRIMARY KEY, user_id text, owner int);
-- Already registered.
CREATE TABLE courseware_studentmodule (id serial PRIMARY KEY, student_id int NOT NULL);
SELECT softfk_add('courseware_studentmodule', 'student_id', 'auth_user');

SELECT kind, child, child_column, parent, parent_column, on_delete, indexed, constraint_name, note
  FROM softfk_discover('auth_user');

-- Estimated rows come from the statistics, not from counting.
INSERT INTO completion (user_id) SELECT generate_series(1, 500);
ANALYZE completion;
SELECT child, estimated_rows FROM softfk_discover('auth_user') WHERE child = 'completion'::regclass;

-- With no argument: every parent some foreign key or soft reference points at.
CREATE TABLE course (id int PRIMARY KEY);
CREATE TABLE course_run (id serial PRIMARY KEY, course_id int REFERENCES course, course_id_old int);
CREATE TABLE course_tag (id serial PRIMARY KEY, course_id int);
SELECT kind, child, child_column, parent FROM softfk_discover() WHERE parent = 'course'::regclass;
SELECT count(*) AS rows_for_every_parent FROM softfk_discover();

-- Its rows feed softfk_add directly.
SELECT softfk_add(child, child_column, parent, parent_column, on_delete => 'set null')
  FROM softfk_discover('auth_user') WHERE kind = 'candidate' AND child = 'completion'::regclass;
SELECT kind, child, child_column FROM softfk_discover('auth_user') WHERE child = 'completion'::regclass;

DROP TABLE enrollment, bookmark, grade, note, badge, mention, membership, login, completion,
    certificate, survey, courseware_studentmodule, course_run, course_tag, course, auth_user;
DROP EXTENSION pg_softfk;
