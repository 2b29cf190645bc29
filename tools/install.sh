#!/usr/bin/env bash
# Set up everything avsr needs on a fresh Debian machine: Debian packages,
# a virtual environment in .venv, and the package itself (editable, with the
# test extras). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng: the speech engine behind the SynthGRID corpus (libespeak-ng).
# gcc + Python headers: the pesq package (PESQ of avsr evaluate-enhance) ships as source and is compiled.
PACKAGES=""
command -v espeak-ng >/dev/null 2>&1 || PACKAGES="espeak-ng"
command -v gcc >/dev/null 2>&1 || PACKAGES="$PACKAGES gcc python3-dev"
if [ -n "$PACKAGES" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q $PACKAGES >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q $PACKAGES >/dev/null; }
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# the 'compat' extra without its dependencies: ESPnet's conformer/decoder modules run with
# torch alone and are the reference of the Auto-AVSR conversion tests (its full dependency
# set does not resolve from PyPI)
.venv/bin/python -m pip install -q --no-deps "espnet>=202402"
echo "avsr installed in $(pwd)/.venv"
