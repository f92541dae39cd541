#!/usr/bin/env bash
# Benchmark: one batch over many children. softfk_purge() of one deleted user whose parent
# has CHILDREN registered children (default 170, Open edX's count for auth_user), each of
# 2,000 rows with an index on user_id: one batch, one statement per child, plus the batch's
# fixed costs (its table locks taken up front: src/purge/table_locks.rs).
#
#   bash bench/children.sh [CHILDREN]       (default 170; about a minute)
#   PG_MAJOR=18 PG_BUILD=release bash bench/children.sh
#
# Prints the median, 10th and 90th percentile of ROUNDS (default 40) calls, and every
# figure. To compare two builds, run it once with each installed, in turns.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

CHILDREN=${1:-170}
ROUNDS=${ROUNDS:-40}
CLUSTER=$ROOT/target/bench-children-cluster
PORT=$(($(setting demo_port) + 7))

install_prerequisites
install_extension
start_bench_cluster "$CLUSTER" "$PORT" 512MB
trap 'stop_cluster "$CLUSTER"' EXIT
sql() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" -d postgres "$@"; }
timed() { sql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1; }

sql -c "ALTER SYSTEM SET pg_softfk.purge_worker = off" -c "SELECT pg_reload_conf()" >/dev/null
sql <<SQL >/dev/null
CREATE EXTENSION IF NOT EXISTS pg_softfk;
CREATE TABLE auth_user (id int PRIMARY KEY);
INSERT INTO auth_user SELECT generate_series(1, 100000);
DO \$\$ BEGIN FOR i IN 1..$CHILDREN LOOP
    EXECUTE format('CREATE TABLE child_%s (id serial PRIMARY KEY, user_id int)', i);
    EXECUTE format('INSERT INTO child_%s (user_id) SELECT g %% 100000 + 1 FROM generate_series(1, 2000) g', i);
    EXECUTE format('CREATE INDEX ON child_%s (user_id)', i);
    PERFORM softfk_add(format('child_%s', i)::regclass, 'user_id', 'auth_user', validate => 'off');
END LOOP; END \$\$;
VACUUM ANALYZE;
SQL

figures=()
for ((r = 1; r <= ROUNDS; r++)); do
    sql -c "DELETE FROM auth_user WHERE id = $r"
    figures+=("$(timed 'SELECT softfk_purge()')")
done
printf '%s\n' "${figures[@]}" | sort -g | awk -v children="$CHILDREN" '{v[NR] = $1}
    END {printf "softfk_purge() of one key, %d children: median %s ms, p10 %s, p90 %s (n = %d)\n",
         children, v[int((NR + 1) / 2)], v[int(NR * 0.1) + 1], v[int(NR * 0.9)], NR}'
echo "every figure (ms): ${figures[*]}"
