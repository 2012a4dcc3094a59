#!/usr/bin/env bash
# The inner loop: the unit tests (with every fuzz target's corpus replayed)
# and the integration tests that need no other server, in under 2 minutes
# on a warm build. It leaves out the tests against Redis, PostgreSQL,
# MariaDB and S3 (moto), the browser, load and Autobahn runs, fmt and
# clippy: `scripts/test.sh` runs everything, and is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Six at a time, as in scripts/test.sh: they mostly wait.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-6}
cargo test --quiet --lib
# Test names say what they need: the store tests end in their backend
# (`::postgres`, `::mysql`, `::redis`), file tests in `::s3`, and these
# modules run several nodes on Redis or restart a database server.
cargo test --quiet --test it -- \
  --skip postgres --skip mysql --skip redis --skip s3 \
  --skip outage --skip db_restart --skip shared_history --skip accounts_nodes
