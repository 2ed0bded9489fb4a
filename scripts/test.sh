#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the Python packages the integration tests
# need (SeaweedFS, pyiceberg, the ADBC Flight SQL driver, DuckDB) into .venv, builds Floe, then
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
