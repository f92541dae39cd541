#!/usr/bin/env bash
# Benchmark: the queue's readiness scan with many keys waiting for their final pass.
#
#   bash bench/queue.sh [WAITING]     (default 10000 queue rows; about a minute)
#
# A transaction in another session holds the cluster-wide horizon while WAITING users are
# deleted one per transaction (WAITING one-key queue rows) and purged once (their first pass):
# every row then waits for its final pass. Then, ROUNDS times, one more user is deleted and
# softfk_purge() runs: it must find that one ready row among the waiting ones (take_entry's
# query, and the worker's work_is_ready). Reported: the median time of softfk_purge() and of
# the readiness query alone (as take_entry writes it), with its plan; and the same with no
# row waiting, as the floor.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

WAITING=${1:-10000}
ROUNDS=${ROUNDS:-7}
CLUSTER=$ROOT/target/bench-queue-cluster
PORT=$(($(setting demo_port) + 6))

install_prerequisites
install_extension
start_bench_cluster "$CLUSTER" "$PORT" 256MB
trap 'stop_cluster "$CLUSTER"; kill $holder 2>/dev/null || true' EXIT
sql() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d postgres "$@"; }
timed() { sql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

sql -c "ALTER SYSTEM SET pg_softfk.purge_worker = off" -c "SELECT pg_reload_conf()" >/dev/null
sql <<SQL
CREATE EXTENSION IF NOT EXISTS pg_softfk;
DROP TABLE IF EXISTS enrollment, auth_user;
TRUNCATE softfk.deletion;
CREATE TABLE auth_user (id int PRIMARY KEY);
INSERT INTO auth_user SELECT generate_series(1, $WAITING + 1000);
CREATE TABLE enrollment (id serial PRIMARY KEY, user_id int NOT NULL);
INSERT INTO enrollment (user_id) SELECT generate_series(1, $WAITING + 1000);
CREATE INDEX ON enrollment (user_id);
SELECT softfk_add('enrollment', 'user_id', 'auth_user');
VACUUM ANALYZE;
-- The readiness query of take_entry, with the horizon as it is now.
CREATE FUNCTION ready_scan() RETURNS bigint LANGUAGE sql AS \$\$
    SELECT d.id FROM softfk.deletion d
     WHERE (NOT d.final_pass OR (d.final_pass AND d.final_after <= pg_snapshot_xmin(pg_current_snapshot())))
       AND d.id <> ALL ('{}'::bigint[])
     ORDER BY d.id LIMIT 1
\$\$;
SQL

measure() { # measure LABEL FIRST_USER: ROUNDS deletes of one more user, each purged
    local label=$1 user=$2 purge=() scan=()
    for ((r = 0; r < ROUNDS; r++)); do
        sql -c "DELETE FROM auth_user WHERE id = $((user + r))"
        scan+=("$(timed 'SELECT ready_scan()')")
        purge+=("$(timed 'SELECT count(*) FROM softfk_purge()')")
    done
    printf '%-32s softfk_purge() %s ms, readiness query %s ms (medians of %s)\n' "$label" \
        "$(printf '%s\n' "${purge[@]}" | median)" "$(printf '%s\n' "${scan[@]}" | median)" "$ROUNDS"
}

say "floor: nothing waiting"
floor=$(measure "nothing waiting" $((WAITING + 100)))

say "$WAITING queue rows waiting for their final pass"
# The horizon holder: a transaction with an id, open until the end.
as_postgres "$PG_BIN/psql" -X -q -h "$CLUSTER" -p "$PORT" -d postgres \
    -c "BEGIN" -c "SELECT pg_current_xact_id()" -c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
holder=$!
sleep 1
sql -c "DO \$\$ BEGIN FOR i IN 1..$WAITING LOOP DELETE FROM auth_user WHERE id = i; COMMIT; END LOOP; END \$\$"
sql -c "SELECT count(*) FROM softfk_purge()" >/dev/null
# As autovacuum would, soon: the planner knows the queue's shape.
sql -c "VACUUM ANALYZE softfk.deletion"
waiting=$(sql -c "SELECT count(*) FILTER (WHERE final_pass) || ' of ' || count(*) FROM softfk.deletion")
loaded=$(measure "$WAITING waiting" $((WAITING + 200)))
plan=$(sql -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
    SELECT d.id FROM softfk.deletion d
     WHERE (NOT d.final_pass OR (d.final_pass AND d.final_after <= pg_snapshot_xmin(pg_current_snapshot())))
     ORDER BY d.id LIMIT 1")

say "results"
echo "queue rows waiting for their final pass: $waiting"
echo "$floor"
echo "$loaded"
echo "plan of the readiness query with them waiting:"
echo "$plan" | sed 's/^/    /'
