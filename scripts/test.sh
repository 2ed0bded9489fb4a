#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the Python packages the integration tests
# need (SeaweedFS, pyiceberg, the ADBC Flight SQL driver, DuckDB) into .venv and, when missing,
# the PostgreSQL server binaries from Debian's packages; builds Floe, then
# runs the Rust tests and the integration tests (real S3 server, real catalogs, real clients).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/floe-target}"
export CARGO_TERM_COLOR=never

echo "== Python test environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

echo "== PostgreSQL server binaries (for the PostgreSQL-catalog tests)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
   && [ -z "${FLOE_TEST_PG_BIN:-}" ]; then
  # From Debian's packages; the tests start their own throw-away server with these binaries.
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --locked

echo "== Rust tests"
cargo test --workspace --locked

echo "== integration tests"
export FLOE_BIN="$CARGO_TARGET_DIR/debug/floe"
.venv/bin/python -m pytest tests/integration -v "$@"
