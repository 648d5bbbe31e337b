#!/usr/bin/env bash
# `pair` on an empty store and on the same store grown to a few GB: whether the
# message rate holds as the store grows (issue target: within 5 %).
#
# Usage: cargo build --release --workspace --bins
#        scripts/pair-on-a-full-store.sh [GROW_RUNS (default 20)] [GROW_MESSAGES]
# The store grows by GROW_RUNS `pair` runs (100,000 messages and 2,000 new users
# each), or, with GROW_MESSAGES, by one `fill` of that many messages over 1,000
# conversations of 110 users (messages alone: 13000000 is ~3 GB).
# Prints one JSON line per measured run (tagged "store":"empty" or "store":"full")
# and the store's size before the second set. Takes several minutes; needs
# ~250 bytes of disk per message stored.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COURIER="$ROOT/target/release/courier"
BENCH="$ROOT/target/release/courier-bench"
GROW_RUNS=${1:-20}
GROW_MESSAGES=${2:-}
DATA="$(mktemp -d)"
TCP=127.0.0.1:7400 HTTP=127.0.0.1:7480
COURIER_PASSWORD_MEMORY_KIB=64 COURIER_PASSWORD_ITERATIONS=1 COURIER_MAX_DEVICES_PER_USER=64 \
  COURIER_RATE_LIMITS=off COURIER_LOG=warn COURIER_ADMIN_TOKEN=measure \
  "$COURIER" serve --tcp "$TCP" --http "$HTTP" --quic 127.0.0.1:7401 --data-dir "$DATA" >/dev/null &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/7480) 2>/dev/null && break; sleep 0.1; done

pair() { "$BENCH" pair --server "$TCP" --http "http://$HTTP" --server-pid "$PID" | grep '^{' | tail -1; }
measure() { for _ in 1 2 3; do line=$(pair); echo "${line%\}},\"store\":\"$1\"}"; done; }

measure empty
if [ -n "$GROW_MESSAGES" ]; then
  "$BENCH" fill --server "$TCP" --http "http://$HTTP" --server-pid "$PID" \
    --messages "$GROW_MESSAGES" --hold-secs 0 --timeout-secs 3000 | grep '^{' | tail -1
else
  for _ in $(seq "$GROW_RUNS"); do pair >/dev/null; done
fi
echo "{\"store_bytes\":$(du -sb "$DATA" | cut -f1)}"
measure full
