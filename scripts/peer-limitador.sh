#!/usr/bin/env bash
# Tollgate's shared decision against Kuadrant's limitador (its Redis
# storages), same Redis, same threads, same run: peers/limitador (a package
# of its own, so the main build never compiles the peer; its RocksDB takes
# minutes to build the first time and needs libclang-dev).
#   scripts/peer-limitador.sh   (THREADS=2 DECISIONS=200000 TENANTS=100)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
cd peers/limitador
CARGO_TARGET_DIR=../../target/peers cargo run --release --quiet --locked
