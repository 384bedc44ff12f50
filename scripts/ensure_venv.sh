#!/usr/bin/env bash
# Creates .venv on first use and reinstalls when requirements.txt or constraints.txt change.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$ROOT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
stamp=".venv/.installed-$(cat requirements.txt constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing Python dependencies into .venv (first run or changed requirements)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # pip warns about index folders some machines configure but lack; keep real errors visible.
  pip_q() { .venv/bin/python -m pip "$@" 2> >(grep -v '^WARNING: Location' >&2); }
  pip_q install --quiet --upgrade pip
  pip_q install --quiet -r requirements.txt -c constraints.txt
  pip_q check
  rm -f .venv/.installed-*
  touch "$stamp"
fi
