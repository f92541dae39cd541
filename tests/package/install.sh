#!/usr/bin/env bash
# The Debian package of a major whose server is Debian's (15): built by script/package,
# installed with dpkg into the machine's PostgreSQL while a cluster that loaded the library
# runs (the server must keep working: dpkg renames a new file over the old, never rewrites a
# mapped one), used after a restart (CREATE EXTENSION, a registration, orphan_report()), and
# removed without a trace. Prints one "ok N - ..." or "not ok N - ..." line per check.
#
#   bash tests/package/install.sh MAJOR
source "$(dirname "${BASH_SOURCE[0]}")/../../script/lib.sh"
use_major "$1"

n=0
check() { # check DESCRIPTION COMMAND...
    local description=$1
    shift
    n=$((n + 1))
    if "$@" >/dev/null 2>&1; then echo "ok $n - $description"; else echo "not ok $n - $description"; fi
}

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
PACKAGE=postgresql-$PG_MAJOR-softfk
DEB=$ROOT/target/packages/${PACKAGE}_$VERSION-1_amd64.deb
CLUSTER=$ROOT/target/package-test-pg$PG_MAJOR
PORT=$(($(setting test_port) + 1))
LIB=/usr/lib/postgresql/$PG_MAJOR/lib/pg_softfk.so
CONTROL=/usr/share/postgresql/$PG_MAJOR/extension/pg_softfk.control
sql() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER" -p "$PORT" "$@"; }

bash "$ROOT/script/package" "$PG_MAJOR" >/dev/null
check "script/package wrote $(basename "$DEB")" test -s "$DEB"
depends_on_postgresql() { dpkg-deb --field "$DEB" Depends | grep -qw "postgresql-$PG_MAJOR"; }
check "the package depends on postgresql-$PG_MAJOR" depends_on_postgresql
holds_every_file() {
    local contents
    contents=$(dpkg-deb --contents "$DEB")
    grep -q "\.$LIB\$" <<<"$contents" && grep -q "\.$CONTROL\$" <<<"$contents" \
        && grep -q "extension/pg_softfk--$VERSION\.sql\$" <<<"$contents" || return 1
    local upgrade
    for upgrade in "$ROOT"/sql/pg_softfk--*--*.sql; do
        grep -q "extension/$(basename "$upgrade")\$" <<<"$contents" || return 1
    done
}
check "it holds the library, the control file, the install script and every upgrade script" \
    holds_every_file
check "META.json's version is the crate's ($VERSION)" \
    grep -q "\"version\": \"$VERSION\"" "$ROOT/META.json"

# A cluster running the library as installed before (the development build).
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
sql -d postgres -c "CREATE EXTENSION pg_softfk" -c "SELECT count(*) FROM orphan_report()" >/dev/null
inode_before=$(stat -c %i "$LIB")
check "dpkg -i over the running cluster" dpkg -i "$DEB"
check "the library was replaced by a new file, not rewritten in place" \
    test "$(stat -c %i "$LIB")" != "$inode_before"
check "the running cluster still answers with the library it had loaded" \
    sql -d postgres -c "SELECT count(*) FROM orphan_report()"
no_process_died() { ! grep -q 'terminated by signal' "$CLUSTER/server.log"; }
check "no server process died meanwhile" no_process_died

# Restarted on the package's library: the extension works.
as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w restart >/dev/null
check "a fresh database creates the extension from the package" \
    sql -d postgres -c "CREATE DATABASE packaged" -c "\\c packaged" -c "CREATE EXTENSION pg_softfk"
sql -d packaged <<'SQL' >/dev/null
CREATE TABLE auth_user (id int PRIMARY KEY);
CREATE TABLE enrollment (id int, user_id int);
INSERT INTO auth_user VALUES (1), (2);
INSERT INTO enrollment VALUES (1, 1), (2, 3);
SELECT softfk_add('enrollment', 'user_id', 'auth_user', validate => 'off');
SQL
counts_the_orphan() { test "$(sql -d packaged -c 'SELECT orphan_rows FROM orphan_report()')" = 1; }
check "a registration's orphan_report() counts its orphan" counts_the_orphan
stop_cluster "$CLUSTER"

check "dpkg -r removes it" dpkg -r "$PACKAGE"
nothing_left() { ! dpkg -s "$PACKAGE" && ! test -e "$LIB" && ! test -e "$CONTROL"; }
check "nothing of it is left" nothing_left

# The machine as it was: the development build installed again.
install_extension >/dev/null 2>&1
echo "1..$n"
