#!/usr/bin/env bash
# One command for a newcomer: sets up a virtualenv with the pinned dependencies and starts the
# service on the embedded default (SQLite, in-process cache and channel layer) with demo data at
# http://127.0.0.1:8000 (API, /api/docs/, /admin/, WebSocket /ws/notifications/).
# Usage: bash backend/run-dev.sh [--port 8000]    Demo logins: test_supervisor / test_operator /
# test_maker / admin (the only one for /admin/), password "workorder-dev" (dev only: never on a
# reachable server; WORKORDER_DEMO_PASSWORD changes it).
set -euo pipefail
cd "$(dirname "$0")/.."
port=8000
[ "${1:-}" = "--port" ] && port=$2
password="${WORKORDER_DEMO_PASSWORD:-workorder-dev}"
step() { printf 'workorder: %s\n' "$*"; }

if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "workorder needs Python >= 3.11 (python3 is $(python3 --version 2>&1))" >&2; exit 2
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    step "installing python3-venv (apt-get) ..."
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else echo "python3-venv is missing: sudo apt-get install python3-venv" >&2; exit 2; fi
fi
if [ ! -x .venv/bin/python ]; then
  step "creating the virtualenv .venv ..."
  python3 -m venv .venv
fi
step "installing the pinned dependencies into .venv (the first time takes a minute or two) ..."
.venv/bin/pip install -q --disable-pip-version-check -c backend/constraints.txt -e backend

export DJANGO_DEBUG=1 WORKORDER_STATE_DIR="${WORKORDER_STATE_DIR:-$PWD/.state}"
unset DATABASE_URL REDIS_URL
step "migrating the SQLite database in $WORKORDER_STATE_DIR ..."
.venv/bin/workorder-manage migrate --no-input -v 0
step "seeding demo data: catalog, users, 2000 work orders (idempotent; the first time takes up to a minute) ..."
# --reset-passwords: this is the development database run-dev.sh owns, and the accounts above must
# have "$password" even if it changed since the last run (seed_demo names every account it resets).
.venv/bin/workorder-manage seed_demo --password "$password" --reset-passwords -v 2
cat <<INFO
workorder: ready at http://127.0.0.1:$port/ (the API docs: /api/docs/), state in $WORKORDER_STATE_DIR
workorder: demo accounts, password "$password":
             admin            staff and superuser: the API and /admin/ (the only account for /admin/)
             test_supervisor  approves work orders, assigns tasks (department Cutting)
             test_operator    claims tasks, reports progress (department Cutting)
             test_maker       creates work orders
INFO
exec .venv/bin/workorder-manage runserver "127.0.0.1:$port"
