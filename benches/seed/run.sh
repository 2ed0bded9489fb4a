#!/usr/bin/env bash
# Seed-question benchmark, in the repo's .venv (see ../venv-run.sh), e.g.  bash benches/seed/run.sh --rows 20000000 --runs 5
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv-run.sh" seed "$@"
