#!/usr/bin/env bash
# TPC-H benchmark, in the repo's .venv (see ../venv-run.sh), e.g.  bash benches/tpch/run.sh --sf 1 --runs 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv-run.sh" tpch "$@"
