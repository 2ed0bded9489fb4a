#!/usr/bin/env bash
# Planning benchmark wrapper: creates/uses the repo's .venv, installs benches/requirements.txt into
# it, then runs benches/planning/run.py with the given arguments, e.g.  bash benches/planning/run.sh --runs 10
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$repo/benches/requirements.txt"
exec "$venv/bin/python" "$repo/benches/planning/run.py" "$@"
