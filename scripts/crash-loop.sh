#!/usr/bin/env bash
# Kills a loaded Tollgate with SIGKILL N times (default 300) on one data
# directory, restarting it each time, and checks after every restart that the
# counters equal the persisted records and that no more than the last flush
# interval was lost. Prints one line per round.
#   scripts/crash-loop.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
TOLLGATE_CRASH_ROUNDS="${1:-300}" cargo test --release --test crash kill_9 -- --nocapture
