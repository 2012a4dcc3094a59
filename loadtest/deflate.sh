#!/usr/bin/env bash
# permessage-deflate on the fan-out scenario: the same run with receivers
# that negotiate it (--deflate, as browsers do) and without, alternating
# (ROUNDS times), at 100k and 400k deliveries/s. chatd pinned to core 0 with
# one shard and no store, the generator on core 1. Prints one line per run:
# server CPU and user-space CPU per delivery, p99, bytes on the wire per
# delivery. QUICK=1: one short round (a smoke test).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release --quiet -p chatd -p loadtest)
chatd=$target/release/chatd
gen=$target/release/loadtest
rounds=${ROUNDS:-2}
dur=(--duration 10s --warmup 2s)
if [ "${QUICK:-}" = 1 ]; then rounds=1; dur=(--duration 2s --warmup 1s); fi
port=18090

taskset -c 0 "$chatd" --host 127.0.0.1 --port $port --shards 1 --log-level warn \
  --set metrics.enabled=false --set store.backend=none >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

for round in $(seq "$rounds"); do
  for rate in 100 400; do
    for mode in plain deflate; do
      flag=()
      [ "$mode" = deflate ] && flag=(--deflate)
      line=$(taskset -c 1 "$gen" fanout --url 127.0.0.1:$port --clients 1000 --senders 10 \
        --rate "$rate" "${dur[@]}" --server-pid $pid --quiet "${flag[@]}" | sed -n 's/^JSON //p')
      echo "$line" | python3 -c '
import json, sys
r = json.load(sys.stdin); e = r.get("extra", {})
print("round %s %sk/s %-7s delivered %5.1f%%  cpu/delivery %.2f us  user %.2f us  p99 %d us  wire %.0f B/delivery  generator cpu %.0f%%  closes %s" % (
  sys.argv[1], sys.argv[2], sys.argv[3], r["delivered_pct"], r["server_cpu_us_per_delivery"] or 0,
  e.get("server_user_us_per_delivery", 0), r["p99_us"], e.get("wire_bytes_per_delivery", 0),
  r["generator_cpu_pct"], r["closes"]))
' "$round" "$rate" "$mode"
    done
  done
done
