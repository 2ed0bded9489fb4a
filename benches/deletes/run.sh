#!/usr/bin/env bash
# Delete benchmark wrapper: creates/uses the repo's .venv, installs benches/requirements.txt into
# it, then runs benches/deletes/run.py with the given arguments, e.g.  bash benches/deletes/run.sh --sf 1
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$repo/benches/requirements.txt"
exec "$venv/bin/python" "$repo/benches/deletes/run.py" "$@"
