#!/usr/bin/env bash
# Runs django-softfk's test suite against a throwaway PostgreSQL cluster, with Django 4.2 and
# 5.2, each twice in a row (the second run proves the first left nothing behind).
#
#   PG_BIN=/usr/lib/postgresql/15/bin WORK=/tmp/softfk-django [PORT=54330] bash tests/run.sh
#
# PG_BIN: the server's binaries (pg_softfk installed for that server). WORK: a scratch
# directory; the cluster is made anew there. VENVS: where the virtualenvs live (default:
# WORK), reused when complete. Prints a
# TAP line per run ("ok - django 4.2 run 1"), a failing run's log, and exits non-zero if any
# run failed. Phase timings go to $WORK/timings.txt. The cluster is stopped on exit.
set -euo pipefail

: "${PG_BIN:?set PG_BIN to the directory of the PostgreSQL server binaries}"
: "${WORK:?set WORK to a scratch directory}"
PORT=${PORT:-54330}
DJANGO_VERSIONS=${DJANGO_VERSIONS:-"4.2 5.2"}
PYTHON=${PYTHON:-python3}
VENVS=${VENVS:-$WORK}

TESTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGE=$(cd "$TESTS/.." && pwd)
mkdir -p "$WORK" "$VENVS"
WORK=$(cd "$WORK" && pwd)
VENVS=$(cd "$VENVS" && pwd)
PGDIR=$WORK/pg
TIMINGS=$WORK/timings.txt
: >"$TIMINGS"

now() { date +%s%N; }
timed() { # timed LABEL START
    local ms=$((($(now) - $2) / 1000000))
    printf '%s: %d.%03ds\n' "$1" $((ms / 1000)) $((ms % 1000)) >>"$TIMINGS"
}

# The cluster runs as the postgres OS user when we are root (initdb refuses root).
if [ "$(id -u)" = 0 ]; then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

# --- virtualenvs: one per Django version, reused when complete ----------------------------
package_hash() {
    (cd "$PACKAGE" && cat pyproject.toml README.md django_softfk/*.py django_softfk/management/*.py \
        django_softfk/management/commands/*.py) | sha256sum | cut -d' ' -f1
}

make_venv() { # make_venv DJANGO_MAJOR_MINOR
    local version=$1 venv=$VENVS/venv-django-$1 next hash
    next=$(echo "$version" | awk -F. '{printf "%d.%d", $1, $2 + 1}')
    # tblib: the parallel runner needs it to report a failing test's traceback.
    local deps=("Django>=$version,<$next" "psycopg[binary]>=3.1" "tblib")
    if [ "$(cat "$venv/.deps-complete" 2>/dev/null)" != "${deps[*]}" ]; then
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "${deps[@]}"
        echo "${deps[*]}" >"$venv/.deps-complete"
    fi
    # The package from this checkout, reinstalled when its sources changed.
    hash=$(package_hash)
    if [ "$(cat "$venv/.package-hash" 2>/dev/null)" != "$hash" ]; then
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$PACKAGE"
        # setuptools leaves its build directory in the checkout.
        rm -rf "$PACKAGE/build" "$PACKAGE"/*.egg-info
        echo "$hash" >"$venv/.package-hash"
    fi
}

start=$(now)
for v in $DJANGO_VERSIONS; do
    make_venv "$v" >"$WORK/venv-django-$v.log" 2>&1 || {
        echo "not ok - virtualenv for django $v"
        sed 's/^/# /' "$WORK/venv-django-$v.log"
        exit 1
    }
done
timed venvs "$start"

# --- the cluster --------------------------------------------------------------------------
stop_cluster() {
    if [ -f "$PGDIR/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
trap stop_cluster EXIT

start=$(now)
stop_cluster
rm -rf "$PGDIR"
mkdir -p "$PGDIR"
if [ "$(id -u)" = 0 ]; then
    # postgres must reach PGDIR: the traverse bit on every ancestor, PGDIR its own.
    p=$PGDIR
    while [ "$p" != / ]; do
        p=$(dirname "$p")
        runuser -u postgres -- test -x "$p" || chmod o+x "$p"
    done
    chown postgres: "$PGDIR"
fi
as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync >"$PGDIR/initdb.log" 2>&1
cat >>"$PGDIR/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$PGDIR'
shared_preload_libraries = 'pg_softfk'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w start >/dev/null

psql_super() { # psql_super DB SQL
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PORT" -U postgres -d "$1" -c "$2" >/dev/null
}
# A non-superuser application role, as in production; the extension is created by the
# superuser in template1, so every database created afterwards (test databases included) has
# it, and the role may run the purge by hand in the tests.
psql_super postgres "CREATE ROLE django LOGIN CREATEDB"
psql_super template1 "SET client_min_messages = warning; CREATE EXTENSION pg_softfk"
psql_super template1 "GRANT EXECUTE ON FUNCTION softfk_purge() TO django"
psql_super postgres "CREATE DATABASE django OWNER django"
timed cluster "$start"

# --- the runs -----------------------------------------------------------------------------
failed=0
for v in $DJANGO_VERSIONS; do
    for run in 1 2; do
        log=$WORK/django-$v-run-$run.log
        start=$(now)
        if (cd "$TESTS" && env PGHOST="$PGDIR" PGPORT="$PORT" PGUSER=django PGDATABASE=django \
            DJANGO_SETTINGS_MODULE=testproject.settings PYTHONDONTWRITEBYTECODE=1 \
            "$VENVS/venv-django-$v/bin/python" -m django test --parallel 2 --noinput -v 1 \
            ${TEST_LABELS:-}) >"$log" 2>&1; then
            echo "ok - django $v run $run"
        else
            echo "not ok - django $v run $run"
            sed 's/^/# /' "$log" | tail -n 300
            failed=1
        fi
        timed "django $v run $run" "$start"
    done
done
exit $failed
