#!/usr/bin/env bash
# Benchmark: orphan_report() against the best hand-written NOT EXISTS anti-join, side by side
# on the same data, in one run: 1M users, a 10M-row child, 1% of its rows orphans.
#
#   bash bench/report.sh [REPEATS]      (default 7; prints medians and ratios)
#   PG_MAJOR=18 PG_BUILD=release bash bench/report.sh ...   (on PostgreSQL 18, built without assertions)
#
# Builds and installs the release build, starts a throwaway cluster under target/bench-cluster.
# The three contenders run interleaved, round-robin, so drift on a noisy machine hits all alike:
#   not_exists  SELECT count(*) ... WHERE NOT EXISTS (...), the minimal hand-written query;
#   same_output the hand-written queries that return everything one orphan_report() row holds
#               (orphan rows, distinct keys, ten sample keys, rows examined);
#   report      SELECT * FROM orphan_report().
# The hand-written queries get the memory orphan_report() gives itself (work_mem =
# maintenance_work_mem, hash_mem_multiplier = 1), so the comparison is like for like.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

REPEATS=${1:-7}
CLUSTER=$ROOT/target/bench-cluster
PORT=$(setting demo_port)
PORT=$((PORT + 2))

install_prerequisites
install_extension
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
psql_bench() { as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d postgres "$@"; }

say "loading 1M users and 10M child rows (1% orphans)"
psql_bench <<'SQL'
CREATE EXTENSION pg_softfk;
CREATE TABLE auth_user (id int PRIMARY KEY, username text NOT NULL);
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 1000000) g;
CREATE TABLE student_courseenrollment (id bigserial PRIMARY KEY, user_id int, course_id text NOT NULL);
INSERT INTO student_courseenrollment (user_id, course_id)
SELECT CASE WHEN g % 100 = 0 THEN 1000000 + (g % 50000) + 1   -- 1% point past the users
            ELSE (g % 1000000) + 1 END,
       'course-v1:edX+C' || (g % 50)
  FROM generate_series(1, 10000000) g;
CREATE INDEX ON student_courseenrollment (user_id);
VACUUM ANALYZE auth_user;
VACUUM ANALYZE student_courseenrollment;
SELECT softfk_add('student_courseenrollment', 'user_id', 'auth_user');
SQL

HAND_SETUP="SET work_mem = '64MB'; SET hash_mem_multiplier = 1;"
NOT_EXISTS="SELECT count(*) FROM student_courseenrollment c
  WHERE c.user_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.id = c.user_id);"
SAME_OUTPUT="SELECT count(*), count(DISTINCT user_id), (array_agg(DISTINCT user_id ORDER BY user_id))[1:10]
   FROM student_courseenrollment c
  WHERE c.user_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM auth_user p WHERE p.id = c.user_id);
SELECT count(*) FROM student_courseenrollment;"
REPORT="SELECT * FROM orphan_report();"

# time_ms SQL...: wall time of the statements after the setup, from psql's \timing.
time_ms() {
    psql_bench -c "$HAND_SETUP" -c '\timing on' "${@/#/-c}" 2>&1 |
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{ t += $1 } END { printf "%.1f\n", t }'
}
# psql -c takes one statement per -c for \timing to time each; split on ';' lines.
statements() { tr '\n' ' ' <<<"$1" | sed 's/;[[:space:]]*/;\n/g' | sed '/^[[:space:]]*$/d'; }
run() { local s=(); mapfile -t s < <(statements "$1"); time_ms "${s[@]}"; }

say "warming up"
run "$NOT_EXISTS" >/dev/null
run "$REPORT" >/dev/null

say "$REPEATS rounds, interleaved"
results=$(mktemp)
for i in $(seq 1 "$REPEATS"); do
    a=$(run "$NOT_EXISTS"); b=$(run "$SAME_OUTPUT"); c=$(run "$REPORT")
    echo "$a $b $c" | tee -a "$results"
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
m_not_exists=$(awk '{print $1}' "$results" | median)
m_same=$(awk '{print $2}' "$results" | median)
m_report=$(awk '{print $3}' "$results" | median)
say "medians over $REPEATS rounds (ms)"
printf '%-12s %10s\n' not_exists "$m_not_exists" same_output "$m_same" report "$m_report"
awk -v a="$m_not_exists" -v b="$m_same" -v c="$m_report" 'BEGIN {
    printf "report / not_exists  = %.2fx\nreport / same_output = %.2fx\n", c / a, c / b }'

say "same answers: orphan_report() and the hand-written query"
psql_bench -c "SELECT child, orphan_rows, orphan_keys, sample_keys, rows_examined FROM orphan_report();"
psql_bench -c "$NOT_EXISTS"
