#!/usr/bin/env bash
# The test command: system packages and .venv when missing or stale, then ruff and pytest.
# Usage: bash scripts/test.sh [pytest args...]   (from anywhere; works on a fresh Debian 12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}

section() { printf '\n==> %s\n' "$*"; }
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "error: need root (or sudo) to run: $*" >&2; exit 1
    fi
}

section "System packages"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# The tests start a private Postgres when none answers on :5432, so they need the server binaries.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null; then
    missing+=(postgresql)
fi
if [[ ! -x $VENV/bin/python ]] && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "all present (redis-server, postgresql)"
fi

section "Python environment"
bash scripts/install.sh

section "ruff check"
"$VENV/bin/ruff" check .

section "ruff format --check"
"$VENV/bin/ruff" format --check .

section "pytest $*"
exec "$VENV/bin/python" -m pytest "$@"
