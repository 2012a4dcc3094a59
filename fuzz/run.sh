#!/usr/bin/env bash
# Runs every fuzz target for $1 seconds (default 30) on the kept corpus.
# New corpus entries go to a scratch copy, so the repository's corpus only
# changes when someone minimises a long run into it (fuzz/README.md). A
# crash fails the script and leaves its input in fuzz/artifacts/TARGET/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:-30}

if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

cd "$here"
cargo +nightly fuzz build
for target in command frames request event api demo fastchat files; do
  scratch=$(mktemp -d)
  cp -r "corpus/$target/." "$scratch/"
  echo "fuzz: $target for ${seconds}s"
  log="$scratch.log"
  status=0
  cargo +nightly fuzz run "$target" "$scratch" -- \
    -max_total_time="$seconds" -max_len=65536 >"$log" 2>&1 || status=$?
  grep -E "^(Done|==[0-9]+==|SUMMARY)|panicked" "$log" || true
  if [ "$status" != 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  rm -rf "$scratch" "$log"
done
