#!/usr/bin/env bash
# The soak: 10 minutes of mixed load on one cluster, then the invariants.
#
#   bash bench/soak.sh [SECONDS]          (default 600; plus about two minutes of set-up)
#
# It runs tests/tap/008_soak.pl with SOFTFK_SOAK=1: 6 pgbench clients for SECONDS (child
# inserts checked deferred and immediate, inserts for users that do not exist, users deleted
# and created again as new generations, logins updating the users table) while the worker
# purges, with the worker killed by SIGKILL a quarter of the way in (the postmaster restarts
# every backend; the load starts again). Then bench/soak/invariants.sql must hold: the queue
# drains, no validated child keeps an orphan, no row of a live user generation was purged
# and none twice, the archive matches, every purge run ended. The figures it prints (# lines)
# go to BENCHMARKS.md.
source "$(dirname "${BASH_SOURCE[0]}")/../script/lib.sh"

install_prerequisites
install_extension
SOFTFK_SOAK=1 SOFTFK_SOAK_SECONDS=${1:-600} run_tap "$ROOT/target/soak" "$ROOT/tests/tap/008_soak.pl"
