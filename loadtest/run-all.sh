#!/usr/bin/env bash
# Runs every load scenario against chatd and against the baseline server in
# the same run: server pinned to core 0, load generator to core 1.
# Writes loadtest/results/latest.jsonl (one JSON report per run) and
# loadtest/results/latest.md (the tables that BENCHMARKS.md shows).
#
#   loadtest/run-all.sh            full run (~8 min on 2 cores)
#   QUICK=1 loadtest/run-all.sh    5-second smoke of each scenario (CI;
#                                  writes results/smoke.* instead)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
out=loadtest/results
mkdir -p "$out"
# The smoke run must not overwrite the measured results.
name=$([ "$QUICK" = 1 ] && echo smoke || echo latest)
jsonl=$out/$name.jsonl
: > "$jsonl"

# BUILD_PROFILE: the Cargo profile to build and run, `release` by default
# (the test command's smoke passes `dev`: see autobahn/run.sh).
profile=${BUILD_PROFILE:-release}
cargo build --profile "$profile" --quiet -p chatd -p loadtest
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
chatd=$bin/chatd
baseline=$bin/baseline
gen=$bin/loadtest
if [ "$QUICK" = 1 ]; then
  DUR=(--duration 5s --warmup 1s); CLIENTS=100; IDLE=500; STORM=500; RATES=(100)
else
  # 50: the baseline's highest sustained rate can be below 100k/s.
  DUR=(--duration 8s --warmup 2s); CLIENTS=1000; IDLE=19000; STORM=10000; RATES=(50 100 200 400 800 1200 1600)
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; exit 1
}

# start KIND PORT [extra chatd args...]: starts a server pinned to core 0, sets $PID.
# chatd runs without a store (what the fan-out figures measure) unless the
# extra args name one (the durable scenario).
start() {
  local kind=$1 port=$2; shift 2
  if [ "$kind" = chatd ]; then
    taskset -c 0 "$chatd" --host 127.0.0.1 --port "$port" --shards 1 --log-level warn \
      --set metrics.enabled=false --set store.backend=none "$@" >/dev/null &
  else
    taskset -c 0 "$baseline" "127.0.0.1:$port" >/dev/null &
  fi
  PID=$!
  pids+=("$PID")
  wait_port "$port"
}

# stop PID: stops a server and gives the kernel a moment to tear down its
# sockets (19,000 after the idle run) before the next measurement.
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; sleep 2; }

# wait_ready PORT: until chatd's /readyz says 200 (its broker is connected).
wait_ready() {
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "chatd on port $1 never became ready" >&2; exit 1
}

# run KIND LABEL [loadtest args...]: one generator run, its JSON line kept.
run() {
  local kind=$1 label=$2; shift 2
  local line
  line=$(taskset -c 1 "$gen" "$@" --quiet | sed -n 's/^JSON //p')
  echo "{\"server_kind\":\"$kind\",\"label\":\"$label\",\"report\":$line}" >> "$jsonl"
  echo "$kind $label: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("delivered %.1f%%, %.0f/s, p99 %d us, cpu/delivery %s us, closes %s, errors %d" % (r["delivered_pct"], r["deliveries_per_s"], r["p99_us"], r["server_cpu_us_per_delivery"], r["closes"], r["errors"]))')"
}

for kind in chatd baseline; do
  port=$([ "$kind" = chatd ] && echo 18080 || echo 18090)
  # fanout: fixed rates, then a sweep for the highest sustained rate.
  for rate in "${RATES[@]}"; do
    start "$kind" "$port"
    run "$kind" "fanout-$rate" fanout --url "127.0.0.1:$port" --clients "$CLIENTS" --senders 10 --rate "$rate" "${DUR[@]}" --server-pid "$PID"
    stop "$PID"
  done
  start "$kind" "$port"
  run "$kind" rooms rooms --url "127.0.0.1:$port" --clients $((CLIENTS * 2)) --room-size 10 --per-client-rate 1 "${DUR[@]}" --server-pid "$PID"
  stop "$PID"
  # burst: 300 chats in one write, 10 bursts/s, into a room of prompt readers
  # (before the backpressure work every member was closed 1008).
  start "$kind" "$port"
  run "$kind" burst burst --url "127.0.0.1:$port" --clients 100 --senders 1 --rate 10 --burst 300 "${DUR[@]}" --server-pid "$PID"
  stop "$PID"
  start "$kind" "$port"
  run "$kind" connect connect --url "127.0.0.1:$port" --clients "$STORM" --concurrency 200 --sources 2 --server-pid "$PID"
  stop "$PID"
  start "$kind" "$port"
  run "$kind" join-storm join-storm --url "127.0.0.1:$port" --clients "$STORM" --duration 2s --server-pid "$PID"
  stop "$PID"
  start "$kind" "$port"
  run "$kind" reconnect join-storm --reconnect --url "127.0.0.1:$port" --clients "$STORM" --duration 2s --server-pid "$PID"
  stop "$PID"
  start "$kind" "$port"
  run "$kind" idle idle --url "127.0.0.1:$port" --clients "$IDLE" --sources 4 --duration 2s --server-pid "$PID"
  stop "$PID"
done

# durable: chats stored (SQLite, fsync per commit) before delivery; acks timed.
dbdir=$(mktemp -d)
for rate in $([ "$QUICK" = 1 ] && echo 1000 || echo "10000 40000 100000"); do
  rm -rf "$dbdir"/*
  start chatd 18080 --set store.backend=sqlite --set "store.sqlite.path=$dbdir/chatd.db"
  run chatd "durable-$rate" durable --url 127.0.0.1:18080 --clients 2 --senders 2 --rate "$rate" "${DUR[@]}" --server-pid "$PID"
  stop "$PID"
done
rm -rf "$dbdir"

# permessage-deflate (chatd only; the baseline does not negotiate it): the
# 400 msg/s fan-out with every receiver compressing, beside its plain run.
start chatd 18080
run chatd deflate-400 fanout --url 127.0.0.1:18080 --clients "$CLIENTS" --senders 10 --rate 400 --deflate "${DUR[@]}" --server-pid "$PID"
stop "$PID"

# mixed dialects: the same fan-out with a third of the receivers speaking the
# redis-chat-demo dialect (signed in, in the public channel) against the
# native-only room, both with the store on (accounts need it).
dbdir=$(mktemp -d)
for share in 0 0.3334; do
  rm -rf "$dbdir"/*
  start chatd 18080 --set store.backend=sqlite --set "store.sqlite.path=$dbdir/chatd.db" --set demo.public_room=fanout \
    --set auth.argon2.memory_kib=1024 --set auth.argon2.iterations=1
  run chatd "mixed-demo-$share" fanout --url 127.0.0.1:18080 --clients "$CLIENTS" --senders 10 --rate 400 --demo-share "$share" "${DUR[@]}" --server-pid "$PID"
  stop "$PID"
done
rm -rf "$dbdir"

# cross-node: the same fan-out through Redis (receivers on two nodes, senders
# on the first) against one node, at a fixed rate.
if command -v redis-server >/dev/null; then
  rport=16379
  taskset -c 0 redis-server --port $rport --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  rpid=$!; pids+=("$rpid"); wait_port $rport
  rate=${RATES[0]}; [ "$QUICK" = 1 ] || rate=600  # half of the single-node peak
  start chatd 18081 --set broker.redis.url=redis://127.0.0.1:$rport
  n1=$PID
  start chatd 18082 --set broker.redis.url=redis://127.0.0.1:$rport
  n2=$PID
  wait_ready 18081; wait_ready 18082
  run chatd "cross-node-$rate" cross-node --url 127.0.0.1:18081 --url 127.0.0.1:18082 --clients "$CLIENTS" --senders 10 --rate "$rate" "${DUR[@]}" --server-pid "$n1"
  stop "$n1"; stop "$n2"
  start chatd 18080
  run chatd "single-node-$rate" fanout --url 127.0.0.1:18080 --clients "$CLIENTS" --senders 10 --rate "$rate" "${DUR[@]}" --server-pid "$PID"
  stop "$PID"
  stop "$rpid"
else
  echo "cross-node skipped: redis-server not installed" >&2
  [ "${CI:-}" = true ] && exit 1
fi

python3 loadtest/summarize.py "$jsonl" > "$out/$name.md"
cat "$out/$name.md"
