#!/usr/bin/env bash
# Benchmark: adopting a schema shaped like Open edX's, and going back.
#
#   bash bench/adopt.sh [ROUNDS]          (default 5; a few minutes on 2 cores)
#
# One 100k-row auth_user and 400 other tables of 2,000 rows each. 170 of them reference
# auth_user, as Open edX's ~170 columns do: 110 through a native foreign key (CASCADE, SET
# NULL, NO ACTION and Django's DEFERRABLE INITIALLY DEFERRED, mixed), 40 through an
# unconstrained user_id / *_by_id column (candidates), 20 already registered. The other 230
# reference a course table or nothing.
#   (a) discover   softfk_discover('auth_user') and softfk_discover() (every parent): median
#                  time; and the scans of the 402 user tables they caused (pg_stat_user_tables
#                  seq_scan + idx_scan, before and after): zero means they read only catalogs
#                  (and pg_softfk's own registry).
#   (b) adopt      one statement adopting the 110 foreign keys, against dropping the same 110
#                  constraints natively (the floor: adopt drops them too).
#   (c) revert     the DO loop reverting them (three transactions each), against adding the
#                  same 110 keys natively with one validated ADD FOREIGN KEY each.
# Each round runs (b) then (c) for soft and native alternately, so the schema returns to the
# same state. The cluster runs with synchronous_commit = off.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

ROUNDS=${1:-5}
CLUSTER=$ROOT/target/bench-adopt-cluster
PORT=$(($(setting demo_port) + 5))

install_prerequisites
install_extension
start_bench_cluster "$CLUSTER" "$PORT" 512MB
trap 'stop_cluster "$CLUSTER"' EXIT
sql() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d postgres "$@"; }
# timed SQL: milliseconds the statement took, as psql's \timing measures it.
timed() { sql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

say "loading auth_user and 400 tables"
sql <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_softfk;
CREATE TABLE auth_user (id int PRIMARY KEY, username text NOT NULL);
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 100000) g;
CREATE TABLE course (id int PRIMARY KEY);
INSERT INTO course SELECT generate_series(1, 1000);
DO $$
BEGIN
    FOR i IN 1..400 LOOP
        EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, %s int, course_id int, note text)', i,
                       CASE WHEN i <= 150 THEN 'user_id' WHEN i <= 170 THEN 'created_by_id' ELSE 'owner' END);
        EXECUTE format('INSERT INTO t%1$s SELECT g, 1 + (g * 37) %% 100000, 1 + g %% 1000, ''x'' FROM generate_series(1, 2000) g', i);
        IF i <= 170 THEN
            EXECUTE format('CREATE INDEX ON t%s (%s)', i, CASE WHEN i <= 150 THEN 'user_id' ELSE 'created_by_id' END);
        END IF;
        IF i <= 110 THEN
            EXECUTE format('ALTER TABLE t%s ADD FOREIGN KEY (user_id) REFERENCES auth_user %s', i,
                           (ARRAY['ON DELETE CASCADE', 'ON DELETE SET NULL', '',
                                  'ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED'])[1 + i % 4]);
        ELSIF i > 170 AND i <= 300 THEN
            EXECUTE format('ALTER TABLE t%s ADD FOREIGN KEY (course_id) REFERENCES course', i);
        END IF;
    END LOOP;
END $$;
SET pg_softfk.orphans_on_add = off;
SELECT softfk_add('t' || i, 'created_by_id', 'auth_user') FROM generate_series(151, 170) i;
ANALYZE;
SQL
sql -c "SELECT kind, count(*) FROM softfk_discover('auth_user') GROUP BY 1 ORDER BY 1"

say "(a) discover"
scans() { sql -c "SELECT pg_stat_force_next_flush()" >/dev/null; sleep 0.6
          sql -c "SELECT sum(seq_scan + coalesce(idx_scan, 0)) FROM pg_stat_user_tables WHERE schemaname = 'public'"; }
before=$(scans)
one=() all=()
for _ in $(seq 9); do
    one+=("$(timed "SELECT count(*) FROM softfk_discover('auth_user')")")
    all+=("$(timed "SELECT count(*) FROM softfk_discover()")")
done
after=$(scans)
discover_one=$(printf '%s\n' "${one[@]}" | median)
discover_all=$(printf '%s\n' "${all[@]}" | median)

say "(b, c) adopt / revert against native, $ROUNDS rounds"
adopt=() drop=() revert=() add=()
for round in $(seq "$ROUNDS"); do
    adopt+=("$(timed "SELECT count(softfk_adopt(child, child_column)) FROM softfk_discover('auth_user') WHERE adoptable")")
    revert+=("$(timed "DO \$\$ DECLARE r record; BEGIN FOR r IN SELECT child, child_column FROM softfk_discover('auth_user') WHERE kind = 'registered' AND child_column = 'user_id' LOOP CALL softfk_revert(r.child, r.child_column); END LOOP; END \$\$")")
    # Native: the same constraints dropped in one transaction, then added back, validated.
    defs=$(sql -c "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s;', conrelid::regclass, conname, pg_get_constraintdef(oid))
                     FROM pg_constraint WHERE contype = 'f' AND confrelid = 'auth_user'::regclass")
    drops=$(sql -c "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I;', conrelid::regclass, conname)
                      FROM pg_constraint WHERE contype = 'f' AND confrelid = 'auth_user'::regclass")
    drop+=("$(timed "BEGIN; $drops COMMIT;")")
    add+=("$(timed "BEGIN; $defs COMMIT;")")
    echo "round $round: adopt ${adopt[-1]} ms, revert ${revert[-1]} ms; native drop ${drop[-1]} ms, add ${add[-1]} ms"
done
m_adopt=$(printf '%s\n' "${adopt[@]}" | median)
m_revert=$(printf '%s\n' "${revert[@]}" | median)
m_drop=$(printf '%s\n' "${drop[@]}" | median)
m_add=$(printf '%s\n' "${add[@]}" | median)
sql -c "SELECT count(*) AS foreign_keys_back FROM pg_constraint WHERE contype = 'f' AND confrelid = 'auth_user'::regclass"

cat <<EOF

| measure | median | vs native |
|---|---|---|
| softfk_discover('auth_user'), 170 references among 400 tables | $discover_one ms | |
| softfk_discover(), every parent | $discover_all ms | |
| scans of user tables caused by 18 discover calls | $((after - before)) | |
| adopt 110 foreign keys, one statement | $m_adopt ms | $(ratio "$m_adopt" "$m_drop")× dropping them |
| revert 110 references, one CALL each | $m_revert ms | $(ratio "$m_revert" "$m_add")× adding them validated |
| native: drop 110 constraints, one transaction | $m_drop ms | |
| native: add 110 validated foreign keys, one transaction | $m_add ms | |
EOF
