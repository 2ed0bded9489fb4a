#!/usr/bin/env bash
# Bring up the integration-test environment (SeaweedFS S3 + Iceberg REST catalog,
# demo.* tables in both the SQLite and the REST catalog) and print the Floe
# command lines to run against it. Ctrl-C stops it.
#   scripts/test-env.sh [--dir DIR] [--fixed-ports]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.venv/bin/python"
if [[ ! -x "$py" ]]; then
  echo "no $py: create the venv and install tests/requirements.txt first" >&2
  exit 1
fi
exec "$py" "$root/tests/integration/devenv.py" "$@"
