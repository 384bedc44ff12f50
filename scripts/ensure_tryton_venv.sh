#!/usr/bin/env bash
# Creates .venv-tryton (Tryton, the real ERP of include/adapters/tryton) on first use and reinstalls when
# requirements-tryton.txt or constraints-tryton.txt change. Separate from .venv: Tryton never shares Airflow's pins.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=".venv-tryton/.installed-$(cat requirements-tryton.txt constraints-tryton.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing Tryton into .venv-tryton (first run or changed requirements)"
  [ -x .venv-tryton/bin/python ] || "$PY" -m venv .venv-tryton
  pip_q() { .venv-tryton/bin/python -m pip "$@" 2> >(grep -v '^WARNING: Location' >&2); }
  pip_q install --quiet -r requirements-tryton.txt -c constraints-tryton.txt
  pip_q check
  rm -f .venv-tryton/.installed-*
  touch "$stamp"
fi
