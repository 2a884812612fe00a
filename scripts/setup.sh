#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for bacnode: apt and pip packages, dockerd without
# the default bridge, the local busybox image (no registry is reachable here), and kubo, the
# reference IPFS node the interoperability tests run against (built from the Go module proxy
# with the installed Go toolchain, ~2-4 minutes the first time; see scripts/services.py).
# Safe to re-run: whatever is already installed or running is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l  # docker.io recommends needrestart: never restart
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PIP_BREAK_SYSTEM_PACKAGES=1  # Debian's own python3 is "externally managed"
export PYTHONUNBUFFERED=1

APT_PACKAGES=(docker.io busybox-static build-essential libgmp-dev jq)

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
    # A bare Debian python3 has neither pip nor the headers that fastecdsa (via libp2p) builds with.
    python3 -m pip --version >/dev/null 2>&1 || wanted+=(python3-pip)
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

install_python_package() {
    python3 -m pip install -q -e '.[test]'
}

step "apt packages" install_system_packages
step "pip install -e .[test]" install_python_package
step "dockerd" python3 -m scripts.services docker
step "busybox image" python3 -m scripts.services image
step "kubo (IPFS reference node)" python3 -m scripts.services kubo
