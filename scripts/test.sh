#!/usr/bin/env bash
# The project's test command (README.md, "Test"). Works on a fresh Debian
# machine as root: installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
# The scale-out tests run real redis-server processes (redis-cli comes with it).
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets

if [ "${SKIP_AUTOBAHN:-0}" != 1 ]; then
  autobahn/run.sh
fi
