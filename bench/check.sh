#!/usr/bin/env bash
# Benchmark: the soft-reference check against no constraint and a native foreign key, all on
# the same cluster in one run, repeated and interleaved, medians reported.
#
#   bash bench/check.sh [REPEATS]          (default 5; about 40 minutes on 2 cores)
#   PG_MAJOR=18 PG_BUILD=release bash bench/check.sh ...   (on PostgreSQL 18, built without assertions)
#
# Contenders: four identical enrollment tables (bigserial id, user_id int, course_id text,
# created timestamptz; an index on user_id) referencing a 1M-row auth_user:
#   none       no constraint
#   fk         a native FOREIGN KEY
#   soft       softfk_add(..., validate => 'deferred')   (the default)
#   immediate  softfk_add(..., validate => 'immediate')
# Measurements:
#   (a) bulk     one INSERT ... SELECT of 1M rows over 100k users (random order), and the worst
#                case for the check, 1M distinct users
#   (b) contention  pgbench: 4 clients inserting single rows for 50 hot users while 2 clients
#                lock those users FOR UPDATE, sleep 10 ms and update them; inserter TPS, p99
#                latency, MultiXacts created; plotted to bench/check-contention.png
#                (bench/check-contention-pg18.png on 18)
#   (c) single   pgbench, 1 client inserting single rows for random users, no contention;
#                also "noop": a deferred constraint trigger that does nothing (contrib lo's
#                lo_manage on INSERT), the floor any deferred per-row check starts from
#   (e) loop     single-row transactions without the client: a procedure that runs one
#                statement and COMMITs, 50,000 times, per contender (plus "noop"); an INSERT,
#                an UPDATE of another column, Django's save() (the key set to itself and
#                another column), and an UPDATE that changes the key; microseconds per
#                transaction. What (c) measures, without the client round trip and its noise.
#   (d) memory   the backend's peak anonymous memory (RssAnon: private heap, not shared
#                buffers) during one INSERT of 10M rows, over 1M users and all distinct;
#                also "fk_deferred", a DEFERRABLE INITIALLY DEFERRED foreign key (what Django
#                creates): core copies deferred events at statement end, which doubles them
# BENCH_SECTIONS="a d" runs only those sections (default: a b c d e).
# The cluster runs with synchronous_commit = off, so latencies measure the database's work
# rather than this machine's fsync.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

REPEATS=${1:-5}
CLUSTER=$ROOT/target/bench-check-cluster
WORK=$ROOT/target/bench-check
PORT=$(($(setting demo_port) + 3))
VARIANTS=(none fk soft immediate)
# Shorter runs for a smoke test: CONTENTION_SECONDS=5 SINGLE_SECONDS=3 MEMORY_ROWS=100000
CONTENTION_SECONDS=${CONTENTION_SECONDS:-30}
SINGLE_SECONDS=${SINGLE_SECONDS:-15}
MEMORY_ROWS=${MEMORY_ROWS:-10000000}
SECTIONS=${BENCH_SECTIONS:-a b c d e}
LOOP_ROWS=${LOOP_ROWS:-50000}
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

install_prerequisites
# bench/check-contention.png for 15, bench/check-contention-pg18.png for 18.
PLOT=check-contention.png
if [ "$PG_MAJOR" != 15 ]; then PLOT=check-contention-pg$PG_MAJOR.png; fi
if ! command -v gnuplot >/dev/null; then
    apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
fi
install_extension
start_bench_cluster "$CLUSTER" "$PORT" 2GB
trap 'stop_cluster "$CLUSTER"' EXIT
rm -rf "$WORK"
let_postgres_in "$WORK"
sql() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d postgres "$@"; }
pgbench() { as_postgres "$PG_BIN/pgbench" -h "$CLUSTER" -p "$PORT" -n "$@" postgres; }


say "loading 1M users and the key sets"
sql <<'SQL'
CREATE EXTENSION pg_softfk;
CREATE TABLE auth_user (id int PRIMARY KEY, username text NOT NULL, last_login timestamptz);
INSERT INTO auth_user SELECT g, 'user' || g FROM generate_series(1, 1000000) g;
CREATE TABLE keys_repeated AS
SELECT 1 + (hashint4(g) & 2147483647) % 100000 AS user_id FROM generate_series(1, 1000000) g;
CREATE TABLE keys_distinct AS
SELECT g AS user_id FROM generate_series(1, 1000000) g ORDER BY hashint4(g);
CREATE TABLE enroll_none (
    id bigserial PRIMARY KEY, user_id int NOT NULL, course_id text NOT NULL,
    created timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON enroll_none (user_id);
CREATE TABLE enroll_fk (LIKE enroll_none INCLUDING ALL, FOREIGN KEY (user_id) REFERENCES auth_user);
CREATE TABLE enroll_soft (LIKE enroll_none INCLUDING ALL);
CREATE TABLE enroll_immediate (LIKE enroll_none INCLUDING ALL);
CREATE TABLE enroll_fk_deferred (LIKE enroll_none INCLUDING ALL,
    FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED);
SELECT softfk_add('enroll_soft', 'user_id', 'auth_user');
SELECT softfk_add('enroll_immediate', 'user_id', 'auth_user', validate => 'immediate');
CREATE EXTENSION lo;
CREATE TABLE enroll_noop (LIKE enroll_none INCLUDING ALL);
CREATE CONSTRAINT TRIGGER noop AFTER INSERT ON enroll_noop DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION lo_manage(course_id);
VACUUM ANALYZE;
SQL

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# rotated I: the variants, starting at a different one each repetition.
rotated() { local i=$1 n=${#VARIANTS[@]} k; for k in $(seq 0 $((n - 1))); do echo "${VARIANTS[$(((i + k) % n))]}"; done; }
fresh() { sql -c "TRUNCATE enroll_none, enroll_fk, enroll_fk_deferred, enroll_soft, enroll_immediate, enroll_noop" -c "CHECKPOINT"; }

# ---------------------------------------------------------------------------------------- (a)
: >"$WORK/bulk.txt"
section a && say "(a) bulk INSERT ... SELECT of 1M rows, $REPEATS rounds"
section a && for i in $(seq 1 "$REPEATS"); do
    for shape in repeated distinct; do
        for v in $(rotated "$i"); do
            fresh
            ms=$(sql -c '\timing on' -c "INSERT INTO enroll_$v (user_id, course_id)
                    SELECT user_id, 'course-v1:edX+C' || (user_id % 50) FROM keys_$shape" |
                sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
            echo "$shape $v $ms" | tee -a "$WORK/bulk.txt"
        done
    done
done

# ---------------------------------------------------------------------------------------- (b)
section b && say "(b) contention: 4 inserters, 2 lockers on 50 hot users, ${CONTENTION_SECONDS}s, $REPEATS rounds"
cat >"$WORK/locker.sql" <<'SQL'
\set hot random(1, 50)
BEGIN;
SELECT id FROM auth_user WHERE id = :hot FOR UPDATE;
SELECT pg_sleep(0.01);
UPDATE auth_user SET last_login = now() WHERE id = :hot;
COMMIT;
SQL
for v in "${VARIANTS[@]}" noop; do
    printf '\\set u random(1, 50)\nINSERT INTO enroll_%s (user_id, course_id) VALUES (:u, %s);\n' \
        "$v" "'course-v1:edX+Hot'" >"$WORK/hot_$v.sql"
    printf '\\set u random(1, 1000000)\nINSERT INTO enroll_%s (user_id, course_id) VALUES (:u, %s);\n' \
        "$v" "'course-v1:edX+One'" >"$WORK/single_$v.sql"
done
chown postgres: "$WORK"/*.sql
next_multixact() { sql -c "CHECKPOINT" -c "SELECT next_multixact_id FROM pg_control_checkpoint()"; }
: >"$WORK/contention.txt"
section b && for i in $(seq 1 "$REPEATS"); do
    for v in $(rotated "$i"); do
        fresh
        run=$WORK/contention_${v}_$i
        mkdir -p "$run" && chown postgres: "$run"
        before=$(next_multixact)
        (cd "$run" && pgbench -c 4 -j 2 -T "$CONTENTION_SECONDS" -P 1 -l -f "$WORK/hot_$v.sql" \
            >"$run/inserters.out" 2>"$run/progress.txt") &
        (cd "$run" && pgbench -c 2 -j 1 -T "$CONTENTION_SECONDS" -f "$WORK/locker.sql" \
            >"$run/lockers.out" 2>&1)
        wait
        after=$(next_multixact)
        tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$run/inserters.out" | head -n 1)
        p99=$(cat "$run"/pgbench_log.* | awk '{ print $3 / 1000 }' | sort -n |
            awk '{ v[NR] = $1 } END { print v[int(NR * 0.99)] }')
        echo "$v $tps $p99 $((after - before))" | tee -a "$WORK/contention.txt"
    done
done

# ---------------------------------------------------------------------------------------- (c)
: >"$WORK/single.txt"
section c && say "(c) single-row inserts, 1 client, no contention, ${SINGLE_SECONDS}s, $REPEATS rounds"
section c && for i in $(seq 1 "$REPEATS"); do
    for v in $(rotated "$i") noop; do
        fresh
        latency=$(pgbench -c 1 -T "$SINGLE_SECONDS" -f "$WORK/single_$v.sql" 2>/dev/null |
            sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
        echo "$v $latency" | tee -a "$WORK/single.txt"
    done
done

# ---------------------------------------------------------------------------------------- (e)
: >"$WORK/loop.txt"
LOOP_KINDS=(insert update_other save update_key)
# One procedure per contender and kind, with static SQL (plans cached as an application's
# prepared statements are): loop_KIND_CONTENDER(n) runs the statement for i = 0 .. n-1 and
# COMMITs each time. The UPDATEs take the rows the INSERT loop left, in id order ("first" is
# the lowest id).
loop_statement() {
    case $1 in
    insert) echo "INSERT INTO enroll_$2 (user_id, course_id)
                  VALUES (1 + (hashint4(i) & 2147483647) % 1000000, 'course-v1:edX+One')" ;;
    update_other) echo "UPDATE enroll_$2 SET course_id = 'course-v1:edX+Two' WHERE id = first + i" ;;
    save) echo "UPDATE enroll_$2 SET user_id = user_id, course_id = 'course-v1:edX+Three' WHERE id = first + i" ;;
    update_key) echo "UPDATE enroll_$2 SET user_id = 1 + (hashint4(i + 7) & 2147483647) % 1000000 WHERE id = first + i" ;;
    esac
}
section e && for v in "${VARIANTS[@]}" noop; do
    for kind in "${LOOP_KINDS[@]}"; do
        sql <<SQL
CREATE PROCEDURE loop_${kind}_$v(n int) LANGUAGE plpgsql AS \$\$
DECLARE first bigint := (SELECT coalesce(min(id), 0) FROM enroll_$v);
BEGIN
    FOR i IN 0..n - 1 LOOP
        $(loop_statement "$kind" "$v");
        COMMIT;
    END LOOP;
END \$\$;
SQL
    done
done
section e && say "(e) single-row transactions in a server-side loop, $LOOP_ROWS each, $REPEATS rounds"
section e && for i in $(seq 1 "$REPEATS"); do
    for v in $(rotated "$i") noop; do
        fresh
        for kind in "${LOOP_KINDS[@]}"; do
            ms=$(sql -c '\timing on' -c "CALL loop_${kind}_$v($LOOP_ROWS)" |
                sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
            echo "$kind $v $(awk -v ms="$ms" -v n="$LOOP_ROWS" 'BEGIN { printf "%.2f", ms * 1000 / n }')" |
                tee -a "$WORK/loop.txt"
        done
    done
done

# ---------------------------------------------------------------------------------------- (d)
section d && say "(d) peak backend memory during one INSERT of $MEMORY_ROWS rows"
# peak_rss_anon APPNAME: the highest RssAnon (kB) of the backend running as APPNAME, sampled
# every 0.1 s until it goes idle.
peak_rss_anon() {
    local pid="" peak=0 now tries=0
    while [ -z "$pid" ] && ((tries++ < 200)); do
        pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1' AND state = 'active'")
        sleep 0.05
    done
    while [ -r "/proc/$pid/status" ] &&
        [ "$(sql -c "SELECT state FROM pg_stat_activity WHERE pid = $pid")" = active ]; do
        now=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")
        ((now > peak)) && peak=$now
        sleep 0.1
    done
    echo "$peak"
}
: >"$WORK/memory.txt"
section d && for shape in repeated distinct; do
    case $shape in
    repeated) keys="1 + (hashint4(g) & 2147483647) % 1000000" ;;
    distinct) keys="g" ;;
    esac
    for v in "${VARIANTS[@]}" fk_deferred; do
        fresh
        peak_rss_anon "memory_$v" >"$WORK/peak" &
        as_postgres env PGAPPNAME="memory_$v" "$PG_BIN/psql" -X -q -h "$CLUSTER" -p "$PORT" -d postgres \
            -c "INSERT INTO enroll_$v (user_id, course_id)
                SELECT $keys, 'course-v1:edX+C' FROM generate_series(1, $MEMORY_ROWS) g" >/dev/null 2>&1 || true
        wait
        echo "$shape $v $(cat "$WORK/peak")" | tee -a "$WORK/memory.txt"
    done
done

# ------------------------------------------------------------------------------------ summary
say "medians over $REPEATS rounds"
{
    section a && echo "(a) bulk INSERT of 1M rows: median ms, and ratio to none / to fk"
    section a && for shape in repeated distinct; do
        none=$(awk -v s=$shape '$1 == s && $2 == "none" { print $3 }' "$WORK/bulk.txt" | median)
        fk=$(awk -v s=$shape '$1 == s && $2 == "fk" { print $3 }' "$WORK/bulk.txt" | median)
        for v in "${VARIANTS[@]}"; do
            m=$(awk -v s=$shape -v v=$v '$1 == s && $2 == v { print $3 }' "$WORK/bulk.txt" | median)
            awk -v s=$shape -v v=$v -v m="$m" -v n="$none" -v f="$fk" \
                'BEGIN { printf "  %-9s %-10s %10.1f ms  %5.2fx none  %5.2fx fk\n", s, v, m, m / n, m / f }'
        done
    done
    if section b; then
    echo "(b) contention: median inserter TPS, p99 ms, MultiXacts created"
    none_tps=$(awk '$1 == "none" { print $2 }' "$WORK/contention.txt" | median)
    none_p99=$(awk '$1 == "none" { print $3 }' "$WORK/contention.txt" | median)
    for v in "${VARIANTS[@]}"; do
        tps=$(awk -v v=$v '$1 == v { print $2 }' "$WORK/contention.txt" | median)
        p99=$(awk -v v=$v '$1 == v { print $3 }' "$WORK/contention.txt" | median)
        mx=$(awk -v v=$v '$1 == v { print $4 }' "$WORK/contention.txt" | median)
        awk -v v=$v -v t="$tps" -v p="$p99" -v m="$mx" -v nt="$none_tps" -v np="$none_p99" \
            'BEGIN { printf "  %-10s %8.0f tps (%4.2fx none)  p99 %7.2f ms (%5.2fx none)  multixacts %d\n", v, t, t / nt, p, p / np, m }'
    done
    fi
    if section c; then
    echo "(c) single-row insert: median latency ms"
    none_lat=$(awk '$1 == "none" { print $2 }' "$WORK/single.txt" | median)
    for v in "${VARIANTS[@]}" noop; do
        lat=$(awk -v v=$v '$1 == v { print $2 }' "$WORK/single.txt" | median)
        awk -v v=$v -v l="$lat" -v n="$none_lat" 'BEGIN { printf "  %-10s %7.3f ms  %5.2fx none\n", v, l, l / n }'
    done
    fi
    if section e; then
    echo "(e) single-row transactions, server-side loop: median microseconds per transaction"
    for kind in "${LOOP_KINDS[@]}"; do
        none_us=$(awk -v k=$kind '$1 == k && $2 == "none" { print $3 }' "$WORK/loop.txt" | median)
        fk_us=$(awk -v k=$kind '$1 == k && $2 == "fk" { print $3 }' "$WORK/loop.txt" | median)
        for v in "${VARIANTS[@]}" noop; do
            us=$(awk -v k=$kind -v v=$v '$1 == k && $2 == v { print $3 }' "$WORK/loop.txt" | median)
            awk -v k=$kind -v v=$v -v u="$us" -v n="$none_us" -v f="$fk_us" \
                'BEGIN { printf "  %-12s %-10s %7.2f us  %5.2fx none  %5.2fx fk\n", k, v, u, u / n, u / f }'
        done
    done
    fi
    section d && echo "(d) peak backend RssAnon during one 10M-row INSERT (MB)"
    awk '{ printf "  %-9s %-10s %8.1f MB\n", $1, $2, $3 / 1024 }' "$WORK/memory.txt"
} | tee "$WORK/summary.txt"

# The plot: inserter TPS second by second in the last round of (b), one line per variant.
section b || exit 0
for v in "${VARIANTS[@]}"; do
    sed -n 's/^progress: \([0-9.]*\) s, \([0-9.]*\) tps.*/\1 \2/p' \
        "$WORK/contention_${v}_$REPEATS/progress.txt" >"$WORK/tps_$v.dat"
done
gnuplot <<GNUPLOT
set terminal pngcairo size 900,480 font ",10" noenhanced
set output "$ROOT/bench/$PLOT"
set title "Child inserts for 50 hot users while 2 sessions lock them FOR UPDATE (4 inserters, PG $PG_MAJOR, 2 cores)"
set xlabel "seconds"
set ylabel "inserter transactions per second"
set key outside right
set grid
set yrange [0:*]
plot "$WORK/tps_none.dat" with lines lw 2 title "no constraint", \
     "$WORK/tps_soft.dat" with lines lw 2 title "pg_softfk deferred", \
     "$WORK/tps_immediate.dat" with lines lw 2 title "pg_softfk immediate", \
     "$WORK/tps_fk.dat" with lines lw 2 title "native foreign key"
GNUPLOT
say "plot written to bench/$PLOT; raw figures in $WORK"
