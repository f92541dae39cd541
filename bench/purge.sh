#!/usr/bin/env bash
# Benchmark: the purge (capture trigger + background worker) against a plain DELETE, native
# ON DELETE CASCADE and a hand-written set-based child DELETE, on one cluster in one run,
# repeated and interleaved, medians reported.
#
#   bash bench/purge.sh [ROUNDS]          (default 5, at most 9; about 10 minutes on 2 cores)
#   PG_MAJOR=18 PG_BUILD=release bash bench/purge.sh ...   (on PostgreSQL 18, built without assertions)
#
# Four copies of a 100k-row users table; three of them have a 2M-row child (20 rows per user,
# inserted in random order, an index on user_id):
#   plain   users with no trigger and no child: the floor for deleting users
#   fk      child with a native FOREIGN KEY ... ON DELETE CASCADE
#   soft    child with softfk_add(..., on_delete => 'cascade') (validate deferred, the default)
#   manual  child with no constraint, purged by one hand-written set-based DELETE
# Each round deletes 10k users scattered over the table (id % 10 = round), so 200k child rows:
#   (a) delete   time of the user-facing DELETE of the 10k users (soft: with the capture
#                trigger; fk: including the cascade); also "range": 10k users with consecutive
#                ids and no child rows, the cheapest DELETE there is, where the capture's cost
#                per key weighs most, and "range, floor": the same with an empty statement-level
#                AFTER DELETE trigger that has a transition table (what any such capture pays
#                before doing anything)
#   (b) purge    soft: the worker's run, from its start to its end (softfk_purge_runs); manual:
#                DELETE FROM child WHERE user_id IN (the 10k ids)
# Then, on the idle system with default settings:
#   (c) lag      200 single-user deletes (20 child rows each) at random intervals (up to
#                0.1 s apart: the worker stays): time from the deleting COMMIT until the child
#                rows are gone; p50, p99, max
#   (c') cold    20 such deletes 3 s apart, longer than pg_softfk.worker_idle_timeout (2 s):
#                the worker has left each time, so each delete waits for a worker start
#   (d) memory   1M keys queued at once (worker off, one DELETE of 1M users with one child
#                row each), then the worker drains them: its RssAnon sampled every 200 ms
# The cluster runs with synchronous_commit = off, so times measure the database's work rather
# than this machine's fsync.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

ROUNDS=${1:-5}
CLUSTER=$ROOT/target/bench-purge-cluster
WORK=$ROOT/target/bench-purge
PORT=$(($(setting demo_port) + 4))
LAG_DELETES=${LAG_DELETES:-200}
COLD_DELETES=${COLD_DELETES:-20}
MEMORY_USERS=${MEMORY_USERS:-1000000}

install_prerequisites
install_extension
start_bench_cluster "$CLUSTER" "$PORT" 1GB
trap 'stop_cluster "$CLUSTER"' EXIT
rm -rf "$WORK"
let_postgres_in "$WORK"
sql() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d postgres "$@"; }
# timed SQL: milliseconds the statement took, as psql's \timing measures it.
timed() { sql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
worker_on() { sql -c "ALTER SYSTEM SET pg_softfk.purge_worker = $1" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; }
wait_for_empty_queue() { until [ "$(sql -c 'SELECT count(*) FROM softfk.deletion')" = 0 ]; do sleep 0.05; done; }


say "loading 4 x 100k users and 3 x 2M child rows"
sql <<'SQL'
CREATE EXTENSION pg_softfk;
CREATE TABLE users_plain (id int PRIMARY KEY, username text NOT NULL, email text, joined timestamptz DEFAULT now());
INSERT INTO users_plain (id, username, email) SELECT g, 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, 100000) g;
CREATE TABLE users_fk (LIKE users_plain INCLUDING ALL);
CREATE TABLE auth_user (LIKE users_plain INCLUDING ALL);
CREATE TABLE users_manual (LIKE users_plain INCLUDING ALL);
INSERT INTO users_fk SELECT * FROM users_plain;
INSERT INTO auth_user SELECT * FROM users_plain;
INSERT INTO users_manual SELECT * FROM users_plain;
CREATE TABLE child_rows AS
SELECT 1 + g % 100000 AS user_id, 'course-v1:edX+' || (g % 500) AS course_id
  FROM generate_series(0, 1999999) g ORDER BY hashint4(g);
CREATE TABLE enroll_fk (id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users_fk ON DELETE CASCADE,
                        course_id text NOT NULL, created timestamptz NOT NULL DEFAULT now());
CREATE TABLE enroll_soft (id bigserial PRIMARY KEY, user_id int NOT NULL, course_id text NOT NULL,
                          created timestamptz NOT NULL DEFAULT now());
CREATE TABLE enroll_manual (LIKE enroll_soft INCLUDING ALL);
INSERT INTO enroll_fk (user_id, course_id) SELECT * FROM child_rows;
INSERT INTO enroll_soft (user_id, course_id) SELECT * FROM child_rows;
INSERT INTO enroll_manual (user_id, course_id) SELECT * FROM child_rows;
CREATE INDEX ON enroll_fk (user_id);
CREATE INDEX ON enroll_soft (user_id);
CREATE INDEX ON enroll_manual (user_id);
SELECT softfk_add('enroll_soft', 'user_id', 'auth_user');
-- For the range deletes: 10k more users per round, with consecutive ids and no child rows.
INSERT INTO users_plain (id, username, email) SELECT g, 'user' || g, 'user' || g || '@example.com' FROM generate_series(1000001, 1090000) g;
INSERT INTO auth_user SELECT * FROM users_plain WHERE id > 1000000;
CREATE TABLE users_floor (LIKE users_plain INCLUDING ALL);
INSERT INTO users_floor SELECT * FROM users_plain WHERE id > 1000000;
CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER floor AFTER DELETE ON users_floor REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nothing();
VACUUM ANALYZE;
SQL

say "(a) user-facing DELETE and (b) purge, $ROUNDS rounds of 10k users / 200k child rows"
for ((round = 0; round < ROUNDS; round++)); do
    ids="SELECT g FROM generate_series($round, 100000, 10) g"
    variants=(plain fk soft manual range)
    # Rotate the order each round.
    for ((i = 0; i < 5; i++)); do
        v=${variants[$(((i + round) % 5))]}
        case $v in
        plain) timed "DELETE FROM users_plain WHERE id IN ($ids)" >>"$WORK/delete_plain" ;;
        fk) timed "DELETE FROM users_fk WHERE id IN ($ids)" >>"$WORK/delete_fk" ;;
        soft)
            timed "DELETE FROM auth_user WHERE id IN ($ids)" >>"$WORK/delete_soft"
            wait_for_empty_queue
            sql -c "SELECT extract(epoch FROM finished_at - started_at) * 1000 FROM softfk.purge_run
                     WHERE started_by = 'worker' AND status = 'completed' ORDER BY id DESC LIMIT 1" >>"$WORK/purge_soft"
            ;;
        range)
            lo=$((1000001 + round * 10000))
            timed "DELETE FROM users_plain WHERE id BETWEEN $lo AND $((lo + 9999))" >>"$WORK/range_plain"
            timed "DELETE FROM users_floor WHERE id BETWEEN $lo AND $((lo + 9999))" >>"$WORK/range_floor"
            timed "DELETE FROM auth_user WHERE id BETWEEN $lo AND $((lo + 9999))" >>"$WORK/range_soft"
            wait_for_empty_queue
            ;;
        manual)
            sql -c "DELETE FROM users_manual WHERE id IN ($ids)"
            timed "DELETE FROM enroll_manual WHERE user_id IN ($ids)" >>"$WORK/purge_manual"
            ;;
        esac
    done
    echo "round $((round + 1)): plain $(tail -1 "$WORK/delete_plain") fk $(tail -1 "$WORK/delete_fk") soft $(tail -1 "$WORK/delete_soft") | range: plain $(tail -1 "$WORK/range_plain") floor $(tail -1 "$WORK/range_floor") soft $(tail -1 "$WORK/range_soft") | purge: worker $(tail -1 "$WORK/purge_soft") manual $(tail -1 "$WORK/purge_manual") (ms)"
done
left=$(sql -c "SELECT (SELECT count(*) FROM enroll_soft e WHERE NOT EXISTS (SELECT FROM auth_user u WHERE u.id = e.user_id)),
                      (SELECT count(*) FROM enroll_soft) - (SELECT count(*) FROM enroll_manual)")
for f in delete_plain delete_fk delete_soft purge_soft purge_manual range_plain range_floor range_soft; do
    declare "m_$f=$(median <"$WORK/$f")"
done

say "(c) lag from the deleting commit to purged: $LAG_DELETES single-user deletes, default settings"
sql <<'SQL'
CREATE TABLE lag (user_id int, lag_ms float8);
CREATE PROCEDURE measure_lag(deletes int, first int DEFAULT 1, pause float8 DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    uid int;
    committed timestamptz;
BEGIN
    FOR i IN first..first + deletes - 1 LOOP
        uid := i * 10 + 9;   -- users the rounds above did not delete (id % 10 = 9)
        DELETE FROM auth_user WHERE id = uid;
        COMMIT;
        committed := clock_timestamp();
        WHILE EXISTS (SELECT FROM enroll_soft WHERE user_id = uid) LOOP
            PERFORM pg_sleep(0.001);
        END LOOP;
        INSERT INTO lag VALUES (uid, extract(epoch FROM clock_timestamp() - committed) * 1000);
        COMMIT;
        PERFORM pg_sleep(coalesce(pause, random() * 0.1));
    END LOOP;
END $$;
SQL
sql -c "CALL measure_lag($LAG_DELETES)"
lag=$(sql -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1),
                            round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1),
                            round(max(lag_ms)::numeric, 1), count(*) FROM lag")
read -r lag_p50 lag_p99 lag_max lag_n <<<"$lag"

say "(c') lag after a quiet spell: $COLD_DELETES single-user deletes 3 s apart (the worker leaves in between)"
sql -c "TRUNCATE lag" -c "CALL measure_lag($COLD_DELETES, $LAG_DELETES + 1, 3)"
cold=$(sql -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1),
                             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1),
                             round(max(lag_ms)::numeric, 1), count(*) FROM lag")
read -r cold_p50 cold_p99 cold_max cold_n <<<"$cold"

say "(d) worker memory while draining $MEMORY_USERS queued keys"
worker_on off
sql <<SQL
CREATE TABLE big_user (id int PRIMARY KEY);
INSERT INTO big_user SELECT generate_series(1, $MEMORY_USERS);
CREATE TABLE big_child (id bigserial PRIMARY KEY, user_id int NOT NULL);
INSERT INTO big_child (user_id) SELECT generate_series(1, $MEMORY_USERS);
CREATE INDEX ON big_child (user_id);
SELECT softfk_add('big_child', 'user_id', 'big_user');
VACUUM ANALYZE big_user, big_child;
DELETE FROM big_user;
SQL
queued=$(sql -c "SELECT count(*), sum(cardinality(keys)) FROM softfk.deletion" | tr '|' ' ')
started=$(date +%s.%N)
worker_on on
# (The worker comes for the queued keys; its memory right after it connects is the baseline.)
pid=
until [ -n "$pid" ]; do
    pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = 'postgres'")
    sleep 0.01
done
rss() { awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0; }
baseline=$(rss)
peak=$baseline
samples=0
while [ "$(sql -c 'SELECT count(*) FROM softfk.deletion')" != 0 ]; do
    r=$(rss)
    echo "$r" >>"$WORK/rss"
    ((r > peak)) && peak=$r
    samples=$((samples + 1))
    sleep 0.2
done
drained=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
end=$(rss)
[ "$end" = 0 ] && end="(the worker had left)"
big_left=$(sql -c "SELECT count(*) FROM big_child")

say "results"
cat <<EOF
(a) user-facing DELETE of 10k users, median of $ROUNDS (ms):
    plain (no trigger)    $m_delete_plain
    native CASCADE        $m_delete_fk        $(ratio "$m_delete_fk" "$m_delete_plain")x plain
    soft (capture)        $m_delete_soft        $(ratio "$m_delete_soft" "$m_delete_plain")x plain
    range, plain          $m_range_plain
    range, floor          $m_range_floor        $(ratio "$m_range_floor" "$m_range_plain")x plain
    range, soft (capture) $m_range_soft        $(ratio "$m_range_soft" "$m_range_plain")x plain
(b) purging their 200k child rows, median of $ROUNDS (ms):
    hand-written DELETE   $m_purge_manual
    worker run            $m_purge_soft        throughput $(ratio "$m_purge_manual" "$m_purge_soft")x the hand-written DELETE
    orphans left / row-count difference to manual: ${left//|/ / }
(c) lag from COMMIT to purged, $lag_n deletes: p50 $lag_p50 ms, p99 $lag_p99 ms, max $lag_max ms
(c') after a quiet spell (a worker start each), $cold_n deletes: p50 $cold_p50 ms, p99 $cold_p99 ms, max $cold_max ms
(d) worker RssAnon draining ${queued% *} queue rows / ${queued#* } keys: at its start $baseline kB, peak $peak kB, after $end kB
    ($samples samples, drained in $drained s, child rows left $big_left)
EOF
