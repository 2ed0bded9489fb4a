#!/usr/bin/env bash
# CTAS benchmark, in the repo's .venv (see ../venv-run.sh), e.g.  bash benches/ctas/run.sh --sf 1
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv-run.sh" ctas "$@"
