#!/usr/bin/env bash
# Benchmark: a mass retirement. A GDPR-style deletion of 200k users out of 2M, each with rows
# in 20 child tables shaped like Open edX's (20M child rows in all), while the application
# keeps enrolling new users and updating last_login. The purge worker against a hand-written
# set-based DELETE / UPDATE per child, and the foreground with no drain at all, in one run.
#
#   bash bench/backlog.sh                  (about 25 minutes on 2 cores, 15 GB of disk)
#   SCALE=0.1 bash bench/backlog.sh        (a tenth of the users and rows, for a quick look)
#   SOFT="1000:0 1000:100 1000:0:0" bash bench/backlog.sh   (the purge's settings measured,
#                                          each as pg_softfk.keys_per_batch:pg_softfk.batch_delay
#                                          in ms[:pg_softfk.scan_threshold]; 0 goes key by key)
#   MAX_WAL_SIZE=16GB WAL_COMPRESSION=lz4 bash bench/backlog.sh   (defaults: 2GB, off)
#   PG_MAJOR=18 PG_BUILD=release bash bench/backlog.sh
#
# The schema (one template database, copied for each phase with STRATEGY FILE_COPY, so that
# every phase starts from the same files):
#   auth_user            2M users
#   20 children          4M, 4M, 2M, 2M, 1.5M, 1M x 3, 0.5M x 4, 0.25M x 6, 0.1M x 2 rows,
#                        user ids spread uniformly; 14 cascade, 2 archive, 4 set null; one
#                        (social_auth_usersocialauth) has no index on its key column
# The foreground (pgbench, 2 clients, -P 1): enroll.sql (a new user and two child rows, one
# transaction) once for every three login.sql (UPDATE auth_user SET last_login).
# The phases, in this order:
#   baseline   the foreground alone for BASELINE_SECONDS, with the extension registered
#   manual     the foreground, and 10 s in: DELETE FROM auth_user WHERE id % 10 = 0 (no
#              extension), then one hand-written statement per child (DELETE ... USING the
#              retired ids; UPDATE ... SET NULL; archive: DELETE ... RETURNING into a table)
#   soft K D [T]  the foreground, and 10 s in: the same DELETE FROM auth_user, the capture
#              queues 200k keys, the worker drains them with pg_softfk.keys_per_batch = K,
#              pg_softfk.batch_delay = D ms and pg_softfk.scan_threshold = T (default: its
#              default; phases 1000 0, 1000 100, 1000 0 0)
# Reported per phase: drain time and its throughput against manual's; the foreground's TPS
# during the drain (median of its per-second figures) against the baseline's; WAL written
# from the DELETE to the end of the drain, with the foreground's share (its baseline WAL per
# transaction times its transactions meanwhile) taken off; after the drain, the queue's size
# and dead tuples, the largest child's dead tuples; the worker's peak RssAnon; and the pending
# keys every second, plotted with the foreground's TPS to bench/backlog.png.
# The cluster runs with synchronous_commit = off, so times measure the database's work rather
# than this machine's fsync.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

SCALE=${SCALE:-1}
SOFT=${SOFT:-1000:0 1000:100 1000:0:0}
BASELINE_SECONDS=${BASELINE_SECONDS:-60}
CLUSTER=$ROOT/target/bench-backlog-cluster
WORK=$ROOT/target/bench-backlog
PORT=$(($(setting demo_port) + 6))
USERS=$(awk -v s="$SCALE" 'BEGIN {printf "%d", 2000000 * s}')

if ! command -v gnuplot >/dev/null; then
    apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
fi
install_prerequisites
install_extension
start_bench_cluster "$CLUSTER" "$PORT" 2GB
trap 'kill $(jobs -p) 2>/dev/null || true; stop_cluster "$CLUSTER"' EXIT
rm -rf "$WORK"
let_postgres_in "$WORK"
sql() {
    local db=$1
    shift
    as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d "$db" "$@"
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
now() { date +%s.%N; }
# max_wal_size as managed services set it by default (start_bench_cluster allows 16 GB), so
# that checkpoints happen during a drain as they would there; MAX_WAL_SIZE and
# WAL_COMPRESSION change them.
sql postgres -c "ALTER SYSTEM SET max_wal_size = '${MAX_WAL_SIZE:-2GB}'" \
    -c "ALTER SYSTEM SET wal_compression = '${WAL_COMPRESSION:-off}'" -c "SELECT pg_reload_conf()" >/dev/null

# name:thousands of rows at SCALE 1:action:key column (the one without an index is marked).
CHILDREN=(
    courseware_studentmodule:4000:cascade:student_id
    student_courseenrollment:4000:cascade:user_id
    grades_persistentsubsectiongrade:2000:cascade:user_id
    completion_blockcompletion:2000:cascade:user_id
    student_anonymoususerid:1500:cascade:user_id
    user_api_userpreference:1000:cascade:user_id
    student_courseaccessrole:1000:cascade:user_id
    bulk_email_optout:1000:cascade:user_id
    certificates_generatedcertificate:500:archive:user_id
    grades_persistentcoursegrade:500:archive:user_id
    student_userattribute:500:cascade:user_id
    django_comment_client_role_users:500:cascade:user_id
    student_manualenrollmentaudit:250:set\ null:enrolled_by_id
    instructor_task_instructortask:250:set\ null:requester_id
    entitlements_courseentitlement:250:cascade:user_id
    oauth2_provider_accesstoken:250:cascade:user_id
    oauth2_provider_refreshtoken:250:cascade:user_id
    social_auth_usersocialauth:250:cascade:user_id:no-index
    student_pendingemailchange:100:set\ null:user_id
    user_api_usercoursetag:100:set\ null:user_id
)

say "loading the template: $USERS users, 20 children (scale $SCALE)"
{
    cat <<SQL
CREATE DATABASE lms_template;
\\c lms_template
CREATE EXTENSION pg_softfk;
CREATE TABLE auth_user (id int PRIMARY KEY, username text NOT NULL, email text NOT NULL,
                        last_login timestamptz, date_joined timestamptz NOT NULL DEFAULT now());
INSERT INTO auth_user (id, username, email, last_login)
SELECT g, 'learner' || g, 'learner' || g || '@example.com', now() - g * interval '1 second'
  FROM generate_series(1, $USERS) g;
CREATE SEQUENCE new_user START $((USERS + 1));
-- The hand-written archive.
CREATE TABLE manual_archive (child regclass, key int, row_data jsonb);
SQL
    for spec in "${CHILDREN[@]}"; do
        IFS=: read -r name thousands action column index <<<"$spec"
        rows=$(awk -v s="$SCALE" -v t="$thousands" 'BEGIN {printf "%d", t * 1000 * s}')
        not_null=$([ "$action" = "set null" ] || echo "NOT NULL")
        cat <<SQL
CREATE TABLE $name (id bigserial PRIMARY KEY, $column int $not_null, course_id text NOT NULL,
                    state text, created timestamptz NOT NULL DEFAULT now());
INSERT INTO $name ($column, course_id, state)
SELECT 1 + (hashint4(g) & 2147483647) % $USERS, 'course-v1:edX+C' || g % 300 || '+2026',
       CASE WHEN g % 3 = 0 THEN '{"position": ' || g % 17 || '}' END
  FROM generate_series(1, $rows) g;
SQL
        [ "$index" = no-index ] || echo "CREATE INDEX ON $name ($column);"
        echo "SELECT softfk_add('$name', '$column', 'auth_user', on_delete => '$action');"
    done
    echo "VACUUM ANALYZE;"
} >"$WORK/schema.sql"
load_start=$(now)
sql postgres -f "$WORK/schema.sql" >/dev/null
sql postgres -c "ALTER DATABASE lms_template WITH is_template = true" -c "CHECKPOINT"
echo "loaded in $(awk -v a="$load_start" -v b="$(now)" 'BEGIN {printf "%.0f", b - a}') s;" \
    "$(sql lms_template -c "SELECT pg_size_pretty(pg_database_size('lms_template'))")"

cat >"$WORK/enroll.sql" <<'SQL'
BEGIN;
INSERT INTO auth_user (id, username, email, last_login)
VALUES (nextval('new_user'), 'new', 'new@example.com', now()) RETURNING id AS new_id \gset
INSERT INTO student_courseenrollment (user_id, course_id) VALUES (:new_id, 'course-v1:edX+DemoX+2026');
INSERT INTO courseware_studentmodule (student_id, course_id, state) VALUES (:new_id, 'course-v1:edX+DemoX+2026', '{}');
COMMIT;
SQL
cat >"$WORK/login.sql" <<SQL
\\set uid random(1, $USERS)
UPDATE auth_user SET last_login = now() WHERE id = :uid;
SQL
chown postgres: "$WORK"/*.sql

# fresh_copy DB: a copy of the template, analyzed as the template was.
fresh_copy() {
    sql postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1 TEMPLATE lms_template STRATEGY FILE_COPY"
}
# foreground DB NAME: pgbench in the background, its per-second progress in WORK/NAME.progress.
# (Stopped with SIGTERM: a background job of a script ignores SIGINT.)
foreground() {
    as_postgres "$PG_BIN/pgbench" -n -c 2 -j 2 -T 3600 -P 1 -h "$CLUSTER" -p "$PORT" \
        -f "$WORK/enroll.sql@1" -f "$WORK/login.sql@3" "$1" >"$WORK/$2.pgbench" 2>"$WORK/$2.progress" &
    FOREGROUND=$!
    FOREGROUND_START=$(now)
}
stop_foreground() { pkill -TERM -f "pgbench -n .* -h $CLUSTER " || true; wait "$FOREGROUND" || true; }
# progress NAME: the foreground's "seconds tps", second by second.
progress() { sed -n 's/^progress: \([0-9.]*\) s, \([0-9.]*\) tps.*/\1 \2/p' "$WORK/$1.progress"; }
# tps_between NAME FROM TO: its per-second TPS between two times (seconds since it began).
tps_between() { progress "$1" | awk -v a="$2" -v b="$3" '$1 > a && $1 <= b {print $2}'; }
transactions_between() { tps_between "$@" | awk '{n += $1} END {printf "%d", n}'; }
wal_lsn() { sql "$1" -c "SELECT pg_current_wal_lsn()"; }
# Checkpoints so far (pg_stat_checkpointer from PostgreSQL 17 on).
checkpoints() {
    sql postgres -c "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter" 2>/dev/null \
        || sql postgres -c "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
}
wal_bytes() { sql postgres -c "SELECT pg_wal_lsn_diff('$2', '$1')::bigint"; }
since_foreground() { awk -v a="$FOREGROUND_START" -v b="$1" 'BEGIN {printf "%.1f", b - a}'; }
retire="DELETE FROM auth_user WHERE id % 10 = 0 AND id <= $USERS"

say "baseline: the foreground alone for ${BASELINE_SECONDS}s"
fresh_copy lms_baseline
lsn0=$(wal_lsn lms_baseline)
foreground lms_baseline baseline
sleep "$BASELINE_SECONDS"
stop_foreground
baseline_tps=$(tps_between baseline 3 "$BASELINE_SECONDS" | median)
baseline_transactions=$(transactions_between baseline 0 100000)
baseline_wal_per_transaction=$(awk -v w="$(wal_bytes "$lsn0" "$(wal_lsn lms_baseline)")" -v n="$baseline_transactions" 'BEGIN {printf "%.0f", w / n}')
echo "baseline: median $baseline_tps tps, $baseline_wal_per_transaction WAL bytes per transaction"
sql postgres -c "DROP DATABASE lms_baseline"

# report NAME SECONDS WAL: one line of the summary.
declare -A DRAIN_SECONDS DRAIN_TPS DRAIN_WAL
record() {
    local name=$1 start=$2 end=$3 lsn_start=$4 lsn_end=$5 checkpoints_before=$6
    local from to seconds wal transactions
    from=$(since_foreground "$start")
    to=$(since_foreground "$end")
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
    wal=$(wal_bytes "$lsn_start" "$lsn_end")
    transactions=$(transactions_between "$name" "$from" "$to")
    DRAIN_SECONDS[$name]=$seconds
    DRAIN_TPS[$name]=$(tps_between "$name" "$from" "$to" | median)
    DRAIN_WAL[$name]=$(awk -v w="$wal" -v n="$transactions" -v p="$baseline_wal_per_transaction" 'BEGIN {printf "%.0f", w - n * p}')
    echo "$name: drained in ${seconds}s, foreground median ${DRAIN_TPS[$name]} tps, WAL $wal bytes ($transactions foreground transactions), $(($(checkpoints) - checkpoints_before)) checkpoints" \
        | tee -a "$WORK/raw.txt"
}

say "manual: a hand-written statement per child after the DELETE"
fresh_copy lms_manual
sql lms_manual -c "DROP EXTENSION pg_softfk CASCADE" 2>/dev/null
{
    echo "CREATE TEMP TABLE retired AS SELECT id FROM auth_user WHERE id % 10 = 0 AND id <= $USERS;"
    echo "$retire;"
    for spec in "${CHILDREN[@]}"; do
        IFS=: read -r name _ action column _ <<<"$spec"
        case $action in
        cascade) echo "DELETE FROM $name c USING retired r WHERE c.$column = r.id;" ;;
        "set null") echo "UPDATE $name c SET $column = NULL FROM retired r WHERE c.$column = r.id;" ;;
        archive) echo "WITH gone AS (DELETE FROM $name c USING retired r WHERE c.$column = r.id RETURNING c.*)
                       INSERT INTO manual_archive SELECT '$name', $column, to_jsonb(gone) FROM gone;" ;;
        esac
    done
} >"$WORK/manual.sql"
chown postgres: "$WORK/manual.sql"
foreground lms_manual manual
sleep 10
lsn_start=$(wal_lsn lms_manual)
checkpoints_before=$(checkpoints)
start=$(now)
sql lms_manual -f "$WORK/manual.sql" >/dev/null
end=$(now)
lsn_end=$(wal_lsn lms_manual)
sleep 5
stop_foreground
record manual "$start" "$end" "$lsn_start" "$lsn_end" "$checkpoints_before"
manual_rows=$(sql lms_manual -c "SELECT count(*) FROM manual_archive")
sql postgres -c "DROP DATABASE lms_manual"

# A soft phase's name and label, from its K:D[:T] setting.
phase_name() {
    local keys delay threshold
    IFS=: read -r keys delay threshold <<<"$1"
    echo "soft_${keys}_${delay}ms${threshold:+_scan$threshold}"
}
phase_label() {
    local keys delay threshold
    IFS=: read -r keys delay threshold <<<"$1"
    echo "keys_per_batch $keys, batch_delay ${delay}ms${threshold:+, scan_threshold $threshold}"
}

for setting in $SOFT; do
    IFS=: read -r keys delay threshold <<<"$setting"
    name=$(phase_name "$setting")
    say "soft, $(phase_label "$setting"): the worker drains after the DELETE"
    scan_threshold="RESET pg_softfk.scan_threshold"
    [ -z "$threshold" ] || scan_threshold="SET pg_softfk.scan_threshold = $threshold"
    sql postgres -c "ALTER SYSTEM SET pg_softfk.keys_per_batch = $keys" \
        -c "ALTER SYSTEM SET pg_softfk.batch_delay = '${delay}ms'" \
        -c "ALTER SYSTEM $scan_threshold" -c "SELECT pg_reload_conf()" >/dev/null
    fresh_copy "lms_$name"
    foreground "lms_$name" "$name"
    sleep 10
    lsn_start=$(wal_lsn "lms_$name")
    checkpoints_before=$(checkpoints)
    start=$(now)
    sql "lms_$name" -c "$retire"
    : >"$WORK/$name.backlog"
    peak=0
    while :; do
        pending=$(sql "lms_$name" -c "SELECT coalesce(sum(coalesce(cardinality(keys), 0) - keys_done), 0) FROM softfk.deletion")
        pid=$(sql "lms_$name" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_softfk purge' AND datname = current_database()")
        if [ -n "$pid" ]; then
            rss=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ "${rss:-0}" -gt "$peak" ] && peak=$rss
        fi
        echo "$(since_foreground "$(now)") $pending" >>"$WORK/$name.backlog"
        [ "$pending" = 0 ] && [ "$(sql "lms_$name" -c "SELECT count(*) FROM softfk.deletion")" = 0 ] && break
        sleep 0.25
    done
    end=$(now)
    lsn_end=$(wal_lsn "lms_$name")
    sleep 5
    stop_foreground
    record "$name" "$start" "$end" "$lsn_start" "$lsn_end" "$checkpoints_before"
    echo "$name: orphan rows left $(sql "lms_$name" -c "SELECT sum(orphan_rows) FROM orphan_report()")" | tee -a "$WORK/raw.txt"
    sql "lms_$name" -c "
        SELECT '$name: worker peak RssAnon $peak kB; queue ' || pg_size_pretty(pg_total_relation_size('softfk.deletion'))
               || ', ' || q.n_dead_tup || ' dead tuples; courseware_studentmodule ' || pg_size_pretty(pg_table_size('courseware_studentmodule'))
               || ', ' || c.n_dead_tup || ' dead, ' || c.n_live_tup || ' live; archived rows ' || (SELECT count(*) FROM softfk.archived_row)
               || ' (manual: $manual_rows); errors ' || (SELECT count(*) FROM softfk.purge_run WHERE errors <> '[]')
          FROM pg_stat_user_tables q, pg_stat_user_tables c
         WHERE q.relid = 'softfk.deletion'::regclass AND c.relid = 'courseware_studentmodule'::regclass" | tee -a "$WORK/raw.txt"
    sql postgres -c "DROP DATABASE lms_$name"
done

{
    echo
    echo "mass retirement: $((USERS / 10)) of $USERS users, 20 children (PostgreSQL $PG_MAJOR, scale $SCALE," \
        "max_wal_size ${MAX_WAL_SIZE:-2GB}, wal_compression ${WAL_COMPRESSION:-off})"
    echo "  baseline foreground: median $baseline_tps tps"
    printf '  %-22s %9s %15s %12s %14s %16s\n' phase drain_s 'vs manual (x)' fg_tps 'vs baseline' 'drain WAL (MB)'
    for name in manual $(for v in $SOFT; do phase_name "$v"; done); do
        printf '  %-22s %9s %15s %12s %14s %16s\n' "$name" "${DRAIN_SECONDS[$name]}" \
            "$(ratio "${DRAIN_SECONDS[manual]}" "${DRAIN_SECONDS[$name]}")" "${DRAIN_TPS[$name]}" \
            "$(ratio "${DRAIN_TPS[$name]}" "$baseline_tps")" \
            "$(awk -v w="${DRAIN_WAL[$name]}" 'BEGIN {printf "%.0f", w / 1048576}')"
    done
    echo "  (soft_K_Dms[_scanT]: keys_per_batch K, batch_delay D, scan_threshold T; vs manual: throughput, manual's drain time / this"
    echo "  one's; WAL: the foreground's estimated share taken off)"
} | tee "$WORK/summary.txt"

plots=()
for setting in $SOFT; do
    name=$(phase_name "$setting")
    label=$(phase_label "$setting")
    progress "$name" >"$WORK/$name.tps"
    plots+=("\"$WORK/$name.backlog\" using 1:(\$2/1000) with lines lw 2 title \"pending keys (k), $label\"")
    plots+=("\"$WORK/$name.tps\" using 1:2 axes x1y2 with lines title \"foreground tps, $label\"")
done
gnuplot <<GNUPLOT
set terminal pngcairo size 1000,560 font ",10" noenhanced
set output "$ROOT/bench/backlog.png"
set title "Retiring $((USERS / 10)) of $USERS users (20 children) under load (PG $PG_MAJOR, 2 cores)"
set xlabel "seconds since the foreground began (the DELETE at 10 s)"
set ylabel "pending keys (thousands)"
set y2label "foreground transactions per second"
set ytics nomirror
set y2tics
set key outside bottom center vertical maxrows 3
set grid
set yrange [0:*]
set y2range [0:*]
plot $(IFS=,; echo "${plots[*]}")
GNUPLOT
say "plot written to bench/backlog.png; raw figures in $WORK"
