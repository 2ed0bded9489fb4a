#!/usr/bin/env bash
# Planning benchmark, in the repo's .venv (see ../venv-run.sh), e.g.  bash benches/planning/run.sh --runs 10
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv-run.sh" planning "$@"
