#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for bacnode: apt packages, the project and its
# declared dependencies in a virtual environment inside the checkout (.venv, without system
# site-packages, so that nothing installed by hand can stand in for a missing dependency),
# dockerd without the default bridge, the local busybox image (no registry is reachable
# here), kubo, the reference IPFS node the interoperability tests run against, and Bacalhau
# v1.9.3's CLI, the reference client the compatibility tests drive bacnode with (both built
# from the Go module proxy with the installed Go toolchain, ~4 and ~7 minutes the first time;
# see scripts/services/).
# Safe to re-run: whatever is already installed or running is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l  # docker.io recommends needrestart: never restart
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PYTHONUNBUFFERED=1

# chromium: the dashboard test drives a real headless browser (tests/integration/test_operating.py)
# systemd: `systemd-analyze verify` checks scripts/bacnode.service (tests/integration/test_service_unit.py)
APT_PACKAGES=(docker.io busybox-static build-essential libgmp-dev jq chromium systemd iproute2 iptables)

elapsed() { # seconds since $1, one decimal
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

step() { # step NAME COMMAND...: run it, say how long it took
    local name=$1 t0
    shift
    t0=$(date +%s.%N)
    echo "=== ${name}"
    "$@"
    echo "=== ${name}: $(elapsed "$t0")s"
}

missing_apt_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' ||
            echo "$pkg"
    done
}

install_system_packages() {
    local wanted=("${APT_PACKAGES[@]}")
    # A bare Debian python3 has neither venv (ensurepip) nor the headers that fastecdsa (via
    # libp2p) builds with.
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || wanted+=(python3-venv)
    python3 - <<'EOF' || wanted+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
    local missing
    missing=$(missing_apt_packages "${wanted[@]}")
    if [[ -z "$missing" ]]; then
        echo "already installed: ${wanted[*]}"
        return
    fi
    echo "installing:" $missing
    apt-get update -qq
    # shellcheck disable=SC2086  # word splitting wanted
    apt-get install -y -qq $missing
}

readonly VENV=.venv
readonly PY=$VENV/bin/python

install_python_package() {
    if [[ ! -x $PY ]] || ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -e '.[test]'
    "$PY" -m pip check
    # An editable install leaves our own modules uncompiled, and with PYTHONDONTWRITEBYTECODE
    # set they would be compiled again at every `bacnode` start (tens of ms of its start-up).
    env -u PYTHONDONTWRITEBYTECODE "$PY" -m compileall -q protocol node cli >/dev/null
}

step "apt packages" install_system_packages
step "$VENV: pip install -e .[test]" install_python_package
step "dockerd" "$PY" -m scripts.services docker
step "busybox image" "$PY" -m scripts.services image
step "kubo (IPFS reference node)" "$PY" -m scripts.services kubo
step "bacalhau (Bacalhau's own CLI, the reference client)" "$PY" -m scripts.services bacalhau
echo "=== ready: $PY -m pytest -q runs the tests; $VENV/bin/bacnode is the CLI"
