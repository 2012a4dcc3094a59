#!/usr/bin/env bash
# The project's test command (README.md, "Test"). Works on a fresh Debian
# machine as root: installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
# A lifecycle test starts chatd under descriptor limits with prlimit.
command -v prlimit >/dev/null || need_apt+=(util-linux)
# The scale-out tests run real redis-server processes (redis-cli comes with it).
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The store tests run real PostgreSQL servers (Debian keeps initdb off PATH).
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || need_apt+=(postgresql)
# The store tests also run on MariaDB servers they start (Debian keeps
# mariadbd in /usr/sbin).
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
# The browser tests drive Debian's Chromium (Playwright is pointed at it);
# SKIP_BROWSER=1 skips them and their installs.
if [ "${SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
fi
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

# Python packages: Playwright (its driver only; the browser is Debian's) and
# moto, the S3-compatible server the file tests store into.
pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
if [ "${SKIP_BROWSER:-0}" != 1 ]; then
  python3 -c 'import playwright' 2>/dev/null || pip_install playwright
fi
command -v moto_server >/dev/null || pip_install 'moto[server]'

# What a failure of the storm tests may come down to (chatd raises the soft
# limit to the hard one when it starts, in the test process too).
echo "open-file limit: soft $(ulimit -Sn), hard $(ulimit -Hn); cores: $(nproc)"

# Each phase's duration, printed at the end.
phases=()
phase() {
  local name=$1 started=$SECONDS
  shift
  "$@"
  phases+=("$(printf '%-10s %4d s' "$name" $((SECONDS - started)))")
}
report() {
  echo "phases:"
  printf '  %s\n' "${phases[@]}"
}
trap report EXIT

phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --workspace --all-targets --quiet -- -D warnings
# (The unit tests replay every fuzz target's kept corpus: src/fuzzing.rs.)
# The integration tests mostly wait (on sockets, servers, timeouts), not
# compute: six at a time took the suite from about 300 s to 110 s on two
# cores. RUST_TEST_THREADS overrides it.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-6}
phase tests cargo test --workspace --all-targets

# The web client end to end in headless Chromium, against the binary the
# tests just built (screenshots land in each test's temp directory).
if [ "${SKIP_BROWSER:-0}" != 1 ]; then
  phase browser python3 tests/browser/run.py --chatd "${CARGO_TARGET_DIR:-target}/debug/chatd"
fi

# The k6 script is for users who have k6; here only its syntax is checked.
if command -v node >/dev/null; then
  node --check loadtest/k6/fanout.js
fi

# Both run against the dev build the tests just made (BUILD_PROFILE=dev:
# no second, release build of the tree), side by side: the load smoke
# mostly waits (5-second scenarios at low rates, pauses between servers)
# while Autobahn's Python client keeps the cores busy.
# A 5-second smoke of every load scenario (no timing assertions), its
# output shown when it ends.
smoke=
if [ "${SKIP_LOADTEST:-0}" != 1 ]; then
  smoke_log=$(mktemp)
  (
    started=$SECONDS
    status=0
    env QUICK=1 BUILD_PROFILE=dev loadtest/run-all.sh >"$smoke_log" 2>&1 || status=$?
    echo $((SECONDS - started)) >"$smoke_log.seconds"
    exit $status
  ) &
  smoke=$!
  trap 'pkill -P $smoke 2>/dev/null; kill $smoke 2>/dev/null; report' EXIT
fi

if [ "${SKIP_AUTOBAHN:-0}" != 1 ]; then
  phase autobahn env BUILD_PROFILE=dev autobahn/run.sh
fi

if [ -n "$smoke" ]; then
  smoke_status=0
  wait $smoke || smoke_status=$?
  trap report EXIT
  cat "$smoke_log"
  phases+=("$(printf '%-10s %4d s (beside autobahn)' loadtest "$(cat "$smoke_log.seconds")")")
  rm -f "$smoke_log" "$smoke_log.seconds"
  [ $smoke_status = 0 ] || { echo "load smoke failed (exit $smoke_status)" >&2; exit 1; }
fi

# The kept fuzz corpus is replayed by the unit tests above, in every run.
# Exploring for new inputs (every target FUZZ_SECONDS each, under cargo-fuzz
# and the nightly toolchain: a 20-minute build) is a separate, longer run:
# set FUZZ_SECONDS (e.g. 30), or run fuzz/run.sh 30.
if [ -n "${FUZZ_SECONDS:-}" ]; then
  phase fuzz fuzz/run.sh "$FUZZ_SECONDS"
fi
