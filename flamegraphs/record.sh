#!/usr/bin/env bash
# Profiles chatd under a load scenario and renders a flamegraph:
#   flamegraphs/record.sh fanout [extra loadtest args]   -> flamegraphs/fanout.svg
#   flamegraphs/record.sh rooms                           -> flamegraphs/rooms.svg
#   flamegraphs/record.sh connect                         -> flamegraphs/connect.svg
# chatd is pinned to core 0, the generator to core 1. perf samples the
# cpu-clock software event (hardware events are not available on this VM)
# with DWARF call graphs (release builds keep line tables, debug = 1).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-fanout}
shift || true
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
command -v inferno-flamegraph >/dev/null || cargo install --quiet inferno
cargo build --release --quiet -p chatd -p loadtest
bin=${CARGO_TARGET_DIR:-target}/release

# settle: seconds from the generator's start to the profile's start (after
# connecting and warm-up); record: seconds profiled.
settle=5; record=4
case "$scenario" in
  fanout) load=(fanout --clients 1000 --senders 10 --rate 400) ;;
  rooms) load=(rooms --clients 2000 --room-size 10 --per-client-rate 1) ;;
  # The storm takes ~1.6 s: profile its middle second.
  connect) load=(connect --clients 19000 --concurrency 200 --sources 2); settle=0.3; record=1 ;;
  *) load=("$scenario") ;;
esac

port=18085
taskset -c 0 "$bin/chatd" --host 127.0.0.1 --port $port --shards 1 --log-level warn --set metrics.enabled=false &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done

taskset -c 1 "$bin/loadtest" "${load[@]}" "$@" --url 127.0.0.1:$port --duration 8s --warmup 3s \
  --server-pid $server --quiet > "flamegraphs/$scenario.txt" &
gen=$!
sleep "$settle"   # connect, settle, warm up
perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p $server -o "/tmp/chatd-$scenario.perf" -- sleep "$record"
wait $gen
perf script -i "/tmp/chatd-$scenario.perf" 2>/dev/null | inferno-collapse-perf > "/tmp/chatd-$scenario.folded"
inferno-flamegraph --title "chatd $scenario: ${load[*]} $*" < "/tmp/chatd-$scenario.folded" > "flamegraphs/$scenario.svg"
# A short text summary of where the time goes, by top-level area.
perf report -i "/tmp/chatd-$scenario.perf" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -5 >> "flamegraphs/$scenario.txt"
echo "wrote flamegraphs/$scenario.svg"
