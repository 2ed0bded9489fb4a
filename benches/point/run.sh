#!/usr/bin/env bash
# Point-query benchmark, in the repo's .venv (see ../venv-run.sh), e.g.  bash benches/point/run.sh --sf 0.1 --runs 300
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv-run.sh" point "$@"
