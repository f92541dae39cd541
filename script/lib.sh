# Shared by script/demo and script/test: prerequisites, building and installing the extension,
# and throwaway clusters run by the postgres OS user. Every fact comes from pgrx.toml.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
# Errors raised from Rust would carry a backtrace in their DETAIL if these were set.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

# pgrx.toml holds flat `key = "value"` lines; keys are unique across its sections.
setting() { sed -n "s/^$1[[:space:]]*=[[:space:]]*\"\(.*\)\"[[:space:]]*\$/\1/p" "$ROOT/pgrx.toml" | head -n 1; }

PGRX_VERSION=$(setting cargo_pgrx_version)
read -r -a TESTED_MAJORS <<<"$(setting tested_majors)"

# use_major MAJOR: the PostgreSQL the following commands build for, install into and run.
# A major with a pg<MAJOR>_prefix in pgrx.toml is built from source there, with assertions
# (script/setup); PG_BUILD=release picks its pg<MAJOR>_release_prefix build, without. The
# other majors are Debian's packages.
use_major() {
    PG_MAJOR=$1
    local prefix
    prefix=$(setting "pg${PG_MAJOR}_prefix")
    # PG_BUILD=release: the build without assertions, where there is one (the benchmarks).
    if [ "${PG_BUILD:-}" = release ] && [ -n "$(setting "pg${PG_MAJOR}_release_prefix")" ]; then
        prefix=$(setting "pg${PG_MAJOR}_release_prefix")
        # Its own build directory: pgrx's bindings come from the server's headers, and cargo
        # would otherwise reuse the ones of the build with assertions.
        export CARGO_TARGET_DIR=$ROOT/target/pg${PG_MAJOR}-release-build
    fi
    if [ -n "$prefix" ]; then
        PG_BIN=$prefix/bin
        PGXS_TEST=$prefix/lib/pgxs/src/test
    else
        PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
        PGXS_TEST=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test
    fi
    PG_CONFIG=$PG_BIN/pg_config
}
# PG_MAJOR=18 bash script/demo: the first tested major unless the environment names one.
use_major "${PG_MAJOR:-${TESTED_MAJORS[0]}}"

say() { printf '\n==> %s\n' "$*"; }

# The [test_cluster] section as postgresql.conf lines.
cluster_settings() {
    sed -n '/^\[test_cluster\]/,/^\[/{/^[a-z_]*[[:space:]]*=/p}' "$ROOT/pgrx.toml" \
        | sed "s/[[:space:]]*=[[:space:]]*\"\(.*\)\"/ = '\1'/"
}

# What this major needs, installed if missing (script/setup).
install_prerequisites() {
    bash "$ROOT/script/setup" "$PG_MAJOR"
}

install_extension() {
    say "building and installing pg_softfk (release)"
    (cd "$ROOT" && cargo pgrx install --release --pg-config "$PG_CONFIG")
}

# The install scripts of released versions (0.1.0, 0.2.0), kept verbatim in tests/fixtures/,
# so that the upgrade test (TAP 009) can CREATE EXTENSION pg_softfk VERSION '0.1.0' and then
# ALTER EXTENSION ... UPDATE. Only the tests install them.
install_old_version_for_tests() {
    cp "$ROOT"/tests/fixtures/pg_softfk--[0-9]*.[0-9]*.[0-9]*.sql "$("$PG_CONFIG" --sharedir)/extension/"
}

# The postgres OS user must reach DIR: give every ancestor the traverse bit it lacks (a
# fresh `mktemp -d` clone sits in a 0700 directory), and hand DIR itself to postgres.
let_postgres_in() {
    local dir=$1 p
    mkdir -p "$dir"
    p=$dir
    while [ "$p" != / ]; do
        p=$(dirname "$p")
        if ! runuser -u postgres -- test -x "$p"; then chmod o+x "$p"; fi
    done
    chown -R postgres: "$dir"
}

as_postgres() { runuser -u postgres -- "$@"; }

# start_cluster DIR PORT [SETTING...]: a fresh cluster in DIR/data, its socket in DIR; extra
# postgresql.conf lines may follow.
start_cluster() {
    local dir=$1 port=$2
    stop_cluster "$dir"
    rm -rf "$dir"
    let_postgres_in "$dir"
    as_postgres "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log"
    {
        cluster_settings
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        printf '%s\n' "${@:3}"
    } >>"$dir/data/postgresql.conf"
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

# The benchmarks' clusters: big buffers and WAL, no checkpoint mid-run, and
# synchronous_commit off, so that times measure the database's work rather than this
# machine's fsync. start_bench_cluster DIR PORT SHARED_BUFFERS
start_bench_cluster() {
    start_cluster "$1" "$2" "shared_buffers = '$3'" "max_wal_size = '16GB'" \
        "checkpoint_timeout = '1h'" "synchronous_commit = off"
}

# The TAP tests (PostgreSQL::Test::Cluster) named, run by prove in WORK as postgres, with the
# cluster settings of pgrx.toml. run_tap WORK FILE... (extra settings come from the environment)
run_tap() {
    local work=$1
    shift
    let_postgres_in "$work"
    cluster_settings >"$work/cluster.conf"
    chown postgres: "$work/cluster.conf"
    (cd "$work" && as_postgres env PATH="$PG_BIN:$PATH" TESTDIR="$work" \
        PG_REGRESS="$PGXS_TEST/regress/pg_regress" SOFTFK_CLUSTER_CONF="$work/cluster.conf" \
        SOFTFK_SOAK="${SOFTFK_SOAK:-}" SOFTFK_SOAK_SECONDS="${SOFTFK_SOAK_SECONDS:-}" \
        SOFTFK_STRESS_SECONDS="${SOFTFK_STRESS_SECONDS:-}" \
        prove -v -I "$PGXS_TEST/perl" -I "$ROOT/tests/tap" "$@")
}

stop_cluster() {
    local dir=$1
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
}
