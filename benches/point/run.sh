#!/usr/bin/env bash
# Point-query benchmark wrapper: creates/uses the repo's .venv, installs benches/requirements.txt into
# it, then runs benches/point/run.py with the given arguments, e.g.  bash benches/point/run.sh --sf 0.1
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$repo/benches/requirements.txt"
exec "$venv/bin/python" "$repo/benches/point/run.py" "$@"
