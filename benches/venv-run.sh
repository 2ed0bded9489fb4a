#!/usr/bin/env bash
# What every benches/<name>/run.sh does: creates/uses the repo's .venv, installs
# benches/requirements.txt into it, then runs benches/<name>/run.py with the given arguments.
#   bash benches/venv-run.sh <name> [arguments of benches/<name>/run.py]
set -euo pipefail
name="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$repo/benches/requirements.txt"
exec "$venv/bin/python" "$repo/benches/$name/run.py" "$@"
