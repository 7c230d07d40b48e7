#!/usr/bin/env bash
# The in-process decision on several bench builds, same run: alternating
# rounds of `decision/(one_thread|one_thread_default_queue)$` over the
# enforcement bench binaries given (build an earlier commit's with
# `git worktree add /tmp/wt REV && cd /tmp/wt && CARGO_TARGET_DIR=/tmp/wt-target
# cargo bench --bench enforcement --no-run`). Prints round, binary, bench,
# median estimate; take the medians over rounds.
#   scripts/ab-decision.sh BENCH_BINARY...      (ROUNDS=7)
set -euo pipefail
ROUNDS=${ROUNDS:-7}
[ $# -gt 0 ] || { echo "give the enforcement bench binaries to compare"; exit 1; }
for r in $(seq "$ROUNDS"); do
  for b in "$@"; do
    "$b" --bench 'decision/(one_thread|one_thread_default_queue)$' --warm-up-time 1 --measurement-time 3 --noplot 2>/dev/null \
      | awk -v b="$b" -v r="$r" '/^decision\// {name=$1} /time:/ {gsub(/\[|\]/, ""); for (i = 1; i <= NF; i++) if ($i == "time:") print r, b, name, $(i+3), $(i+4)}'
  done
done
