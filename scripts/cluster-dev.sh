#!/usr/bin/env bash
# A development deployment on loopback: one PostgreSQL server, a 3-server NATS
# cluster, and N gateway processes (default 3) that are nodes of one deployment.
# Started from Debian's postgresql-15 and nats-server (installed when missing) and
# this checkout's release build; stopped by PID.
#
# Usage: cargo build --release --bin courier
#        scripts/cluster-dev.sh start [N]   # prints each gateway's ports
#        scripts/cluster-dev.sh stop
#        scripts/cluster-dev.sh status
#
# State lives in target/cluster-dev/ (the database, logs, PIDs). Gateway i (node
# gw<i>) listens on TCP 7500+10i, HTTP 7580+10i, QUIC 7501+10i; NATS server j on
# client port 4222+j, route port 6222+j (j = 0, 1, 2).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$ROOT/target/cluster-dev"
COURIER="$ROOT/target/release/courier"

pg_bin() {
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$found" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
    found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  echo "$found"
}

nats_bin() {
  command -v nats-server 2>/dev/null && return
  [ -x /usr/sbin/nats-server ] && { echo /usr/sbin/nats-server; return; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  command -v nats-server || echo /usr/sbin/nats-server
}

# Three NATS servers, each routed to the other two.
start_nats() {
  local bin routes="" urls=""
  bin=$(nats_bin)
  for j in 0 1 2; do routes="$routes${routes:+,}nats://127.0.0.1:$((6222 + j))"; done
  for j in 0 1 2; do
    mkdir -p "$STATE/nats$j"
    "$bin" -a 127.0.0.1 -p $((4222 + j)) -n "nats$j" --cluster_name courier-dev \
      --cluster "nats://127.0.0.1:$((6222 + j))" --routes "$routes" \
      >"$STATE/nats$j/log" 2>&1 &
    echo $! >"$STATE/nats$j/pid"
    urls="$urls${urls:+,}nats://127.0.0.1:$((4222 + j))"
  done
  for j in 0 1 2; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$((4222 + j))") 2>/dev/null && break; sleep 0.1; done
  done
  echo "nats: $urls"
  NATS_URLS=$urls
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local n=${1:-3}
  [ -x "$COURIER" ] || { echo "build first: cargo build --release --bin courier" >&2; exit 1; }
  mkdir -p "$STATE"
  local bin
  bin=$(pg_bin)
  if [ ! -d "$STATE/pg/data" ]; then
    mkdir -p "$STATE/pg"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE/pg"
    as_postgres "$bin/initdb" -D "$STATE/pg/data" -U courier -A trust -E UTF8 --locale=C >/dev/null
  fi
  as_postgres "$bin/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/server.log" \
    -o "-k $STATE/pg -c listen_addresses= -c max_connections=200" -w start >/dev/null
  echo "postgres: host=$STATE/pg user=courier dbname=postgres"
  local url="host=$STATE/pg port=5432 user=courier dbname=postgres"
  start_nats
  for i in $(seq 0 $((n - 1))); do
    local tcp=$((7500 + 10 * i)) http=$((7580 + 10 * i)) quic=$((7501 + 10 * i))
    mkdir -p "$STATE/gw$i"
    COURIER_STORAGE_BACKEND=postgres COURIER_POSTGRES_URL="$url" COURIER_LOG=info \
      COURIER_CLUSTER_NODE_ID="gw$i" COURIER_CLUSTER_NATS_URLS="$NATS_URLS" \
      "$COURIER" serve --tcp "127.0.0.1:$tcp" --http "127.0.0.1:$http" \
      --quic "127.0.0.1:$quic" --data-dir "$STATE/gw$i" >"$STATE/gw$i/log" 2>&1 &
    echo $! >"$STATE/gw$i/pid"
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null && break; sleep 0.1; done
    echo "gateway $i: tcp 127.0.0.1:$tcp http http://127.0.0.1:$http quic 127.0.0.1:$quic (pid $(cat "$STATE/gw$i/pid"))"
  done
}

stop() {
  for pidfile in "$STATE"/gw*/pid "$STATE"/nats*/pid; do
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
  done
  if [ -d "$STATE/pg/data" ]; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  echo stopped
}

status() {
  for pidfile in "$STATE"/gw*/pid "$STATE"/nats*/pid; do
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then echo "$(dirname "$pidfile"): running (pid $pid)"; else echo "$(dirname "$pidfile"): gone"; fi
  done
}

case "${1:-}" in
  start) start "${2:-3}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [N] | stop | status" >&2; exit 2 ;;
esac
