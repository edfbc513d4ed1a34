#!/usr/bin/env bash
# The Debian packages the set-up commands need, installed with apt (as root, or through sudo)
# when missing; a fresh Debian 12 has none of them. Shared by scripts/demo.sh and scripts/test.sh.
# Usage: bash scripts/system-packages.sh NEED...
#   venv      python3-venv, unless .venv works (its pip runs) or python3 can already make a venv
#   services  redis-server and postgresql (the tests start private servers of their own)
#   browser   chromium and chromium-driver (the headless browser that tests/e2e drives)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "error: need root (or sudo) to run: $*" >&2; exit 1
    fi
}

missing=()
for need in "$@"; do
    case $need in
        venv)
            # Debian ships ensurepip (which `python3 -m venv` needs) in python3-venv only.
            if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1 \
                && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
                missing+=(python3-venv)
            fi
            ;;
        services)
            command -v redis-server >/dev/null || missing+=(redis-server)
            if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
                && ! command -v initdb >/dev/null; then
                missing+=(postgresql)
            fi
            ;;
        browser)
            [[ -x /usr/bin/chromium ]] || missing+=(chromium)
            [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
            ;;
        *) echo "error: unknown need '$need' (venv, services, browser)" >&2; exit 2 ;;
    esac
done

if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "all present ($*)"
fi
