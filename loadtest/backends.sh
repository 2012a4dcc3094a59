#!/usr/bin/env bash
# Durable chats per second and ack p99 per store backend, in one run on this
# machine: SQLite (a file), PostgreSQL, MariaDB and Redis, each server
# started here on loopback in a temp directory with its packaged defaults
# (what an ack survives: SQLite synchronous=FULL; PostgreSQL fsync and
# synchronous_commit on; MariaDB innodb_flush_log_at_trx_commit=1; Redis
# with AOF appendfsync everysec, and once with always). chatd (one shard)
# on core 0, the generator on core 1; the database servers are not pinned.
# Prints a markdown table; the JSON reports go to loadtest/results/backends.jsonl.
#
#   loadtest/backends.sh            10k chats/s (ack p99) and 100k (saturation), 8 s each
#   QUICK=1 loadtest/backends.sh    1k chats/s, 3 s each (a smoke)
#   BACKENDS="mysql redis-always" loadtest/backends.sh   only those
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
cargo build --release --quiet -p chatd -p loadtest
bin=${CARGO_TARGET_DIR:-target}/release
if [ "$QUICK" = 1 ]; then
  RATES=(1000); DUR=(--duration 3s --warmup 1s)
else
  RATES=(10000 100000); DUR=(--duration 8s --warmup 2s)
fi
out=loadtest/results/backends.jsonl
: > "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
asroot() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
until_ok() { for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "gave up: $*" >&2; exit 1; }

# Each backend: its server (if any), then chatd's settings for it.
start_postgres() {
  local pgbin; pgbin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
  local port; port=$(free_port)
  mkdir -p "$work/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$work/pg" && chmod 755 "$work"
  asroot "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust >/dev/null
  asroot "$pgbin/postgres" -D "$work/pg/data" -p "$port" -k "$work/pg" -c listen_addresses=127.0.0.1 >/dev/null 2>&1 &
  pids+=($!)
  until_ok asroot "$pgbin/pg_isready" -h 127.0.0.1 -p "$port"
  SETTINGS=(--set store.backend=postgres --set "store.postgres.url=postgres://postgres@127.0.0.1:$port/postgres")
}
start_mariadb() {
  local port; port=$(free_port)
  mariadb-install-db --no-defaults --datadir="$work/my" --user="$(id -un)" --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
  /usr/sbin/mariadbd --no-defaults --datadir="$work/my" --socket="$work/my.sock" --port="$port" --bind-address=127.0.0.1 \
    --skip-grant-tables --skip-log-bin --user="$(id -un)" --log-error="$work/my.err" 2>/dev/null &
  pids+=($!)
  until_ok mariadb -h 127.0.0.1 -P "$port" -u root -e 'CREATE DATABASE IF NOT EXISTS chatd'
  SETTINGS=(--set store.backend=mysql --set "store.mysql.url=mysql://root@127.0.0.1:$port/chatd")
}
start_redis() {
  local fsync=$1 port; port=$(free_port)
  mkdir -p "$work/redis-$fsync"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis-$fsync" --appendonly yes --appendfsync "$fsync" --save "" >/dev/null &
  pids+=($!)
  until_ok redis-cli -p "$port" ping
  SETTINGS=(--set store.backend=redis --set "store.redis.url=redis://127.0.0.1:$port")
}

echo "| store | offered chats/s | acks/s | ack p50 | ack p99 | delivered |"
echo "|---|---:|---:|---:|---:|---:|"
BACKENDS=${BACKENDS:-sqlite postgres mysql redis-everysec redis-always}
for backend in $BACKENDS; do
  for rate in "${RATES[@]}"; do
    rm -rf "${work:?}"/*
    case $backend in
      sqlite) SETTINGS=(--set store.backend=sqlite --set "store.sqlite.path=$work/chatd.db") ;;
      postgres) start_postgres ;;
      mysql) start_mariadb ;;
      redis-everysec) start_redis everysec ;;
      redis-always) start_redis always ;;
    esac
    taskset -c 0 "$bin/chatd" --host 127.0.0.1 --port 18085 --shards 1 --log-level warn \
      --set metrics.enabled=false "${SETTINGS[@]}" >/dev/null 2>"$work/chatd.err" &
    chatd=$!
    until_ok curl -fs http://127.0.0.1:18085/readyz
    line=$(taskset -c 1 "$bin/loadtest" durable --url 127.0.0.1:18085 --clients 2 --senders 2 --rate "$rate" \
      "${DUR[@]}" --server-pid "$chatd" --quiet | sed -n 's/^JSON //p')
    kill "$chatd"; wait "$chatd" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    echo "{\"backend\":\"$backend\",\"rate\":$rate,\"report\":$line}" >> "$out"
    echo "$line" | python3 -c '
import json, sys
r = json.load(sys.stdin); e = r.get("extra", {})
print("| %s | %s | %s | %.2f ms | %.2f ms | %.1f %% |" % (sys.argv[1], format(int(sys.argv[2]), ","),
    format(round(e.get("acks_per_s", 0)), ","), e.get("ack_p50_us", 0) / 1000, e.get("ack_p99_us", 0) / 1000, r["delivered_pct"]))
' "$backend" "$rate"
  done
done
