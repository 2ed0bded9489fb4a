#!/usr/bin/env bash
# Delete benchmark, in the repo's .venv (see ../venv-run.sh), e.g.  bash benches/deletes/run.sh --sf 1 --runs 5
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv-run.sh" deletes "$@"
