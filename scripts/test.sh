#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the Python packages the integration tests
# need (SeaweedFS, pyiceberg, the ADBC Flight SQL driver, DuckDB) into .venv, flightsql-dbapi into
# .venv-flightsql (it pins SQLAlchemy < 2) and, when missing,
# the PostgreSQL server binaries from Debian's packages; builds Floe, then
# checks the crate graph and licenses (cargo-deny from crates.io when missing), runs the Rust
# tests (with the .slt SQL files), bounded fuzz runs (cargo-fuzz from crates.io when missing) and the
# integration tests (real S3 server, real catalogs, real clients).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/floe-target}"
export CARGO_TERM_COLOR=never

echo "== Python test environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
# flightsql-dbapi pins SQLAlchemy < 2: a venv of its own (the Superset test runs it).
if [ ! -x .venv-flightsql/bin/python ]; then
  python3 -m venv .venv-flightsql
fi
.venv-flightsql/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements-flightsql.txt

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

echo "== crate graph (scripts/check-deps.sh)"
bash scripts/check-deps.sh

echo "== cargo deny (licenses; one version each of arrow, datafusion, parquet, iceberg, tonic)"
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install cargo-deny --locked --version 0.18.9
fi
cargo deny check licenses bans

echo "== cargo clippy -D warnings (pedantic with a counted allow-list; clippy.toml bans bare tokio::spawn)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --locked

echo "== Rust tests (unit, the in-process cluster, the .slt files in tests/slt/)"
cargo test --workspace --locked

echo "== fuzz smoke runs (cargo fuzz, corpus in fuzz/corpus)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# Stable toolchain: no sanitizer (that needs nightly), coverage-guided all the same. Each target
# replays its corpus, then mutates it for a fixed number of runs from a fixed seed (about 30 s
# each on 2 cores): the same commit gets the same verdict every time. Searching for new inputs
# is done on demand, for minutes (`cargo fuzz run <target> … -- -max_total_time=600`, see
# fuzz/README.md), and what it finds joins the corpus.
FUZZ_SEED="${FLOE_FUZZ_SEED:-1}"
for run in decode_ticket:600000 check_sql:200000 plan_sql:25000; do
  target="${run%%:*}"
  runs="${run##*:}"
  log="$(mktemp)"
  if (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$HOME/.cache/floe-fuzz-target" \
    cargo fuzz run "$target" --dev --sanitizer none -- -seed="$FUZZ_SEED" -runs="$runs" -timeout=10 \
      -rss_limit_mb=4096 >"$log" 2>&1); then
    tail -n 3 "$log"
    rm -f "$log"
  else
    # A finding: libFuzzer's report (crash, timeout or out-of-memory, with the input as text and
    # Base64) and cargo-fuzz's "Failing input", without the progress lines before them.
    echo "fuzz target $target failed:"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)|NEW_FUNC' "$log" | tail -n 60
    rm -f "$log"
    exit 1
  fi
done

echo "== integration tests"
export FLOE_BIN="$CARGO_TARGET_DIR/debug/floe"
.venv/bin/python -m pytest tests/integration -v "$@"
