#!/usr/bin/env bash
# One command for a newcomer: sets up a virtualenv with the pinned dependencies and starts the
# service on the embedded default (SQLite, in-process cache and channel layer) with demo data at
# http://127.0.0.1:8000 (API, /api/docs/, /admin/, WebSocket /ws/notifications/).
# Usage: bash backend/run-dev.sh [--port 8000]    Demo logins: test_supervisor / test_operator /
# test_maker / admin, password "workorder-dev" (dev only: never on a reachable server).
set -euo pipefail
cd "$(dirname "$0")/.."
port=8000
[ "${1:-}" = "--port" ] && port=$2

if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "workorder needs Python >= 3.11 (python3 is $(python3 --version 2>&1))" >&2; exit 2
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else echo "python3-venv is missing: sudo apt-get install python3-venv" >&2; exit 2; fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c backend/constraints.txt -e backend

export DJANGO_DEBUG=1 WORKORDER_STATE_DIR="${WORKORDER_STATE_DIR:-$PWD/.state}"
unset DATABASE_URL REDIS_URL
mkdir -p "$WORKORDER_STATE_DIR"
.venv/bin/workorder-manage migrate --no-input -v 0
.venv/bin/workorder-manage seed_demo --password "${WORKORDER_DEMO_PASSWORD:-workorder-dev}"
echo "workorder: http://127.0.0.1:$port/api/docs/  (state in $WORKORDER_STATE_DIR)"
exec .venv/bin/workorder-manage runserver "127.0.0.1:$port"
