#!/usr/bin/env bash
# Set up this repository on a fresh Debian 12 machine (as root), idempotently:
#   - the Debian packages the project needs, installed only when missing
#     (apt-get update runs first only when something is to be installed);
#   - .venv in the repository root (python3 -m venv), when missing;
#   - the package with its test extra, editable, into .venv (skipped when
#     setup.cfg and pyproject.toml are unchanged since the last install).
#
# The system Open vSwitch is never used: tests, benchmarks and the lab run a
# private ovsdb-server/ovs-vswitchd (ovs_sriov_proxy/sandbox.py) with every
# socket, database and log in their own directory and controllers on free
# loopback ports. So whether Debian's openvswitch-switch (or the
# openvswitch-testcontroller service, which listens on port 6653) is running
# makes no difference to them. When this script installs the packages it
# keeps their postinst from starting those services, which would hold
# port 6653 and want a kernel module this machine may lack.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

apt_packages=(openvswitch-switch openvswitch-common openvswitch-testcontroller ruby)

say() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root to run: $*"
        exit 1
    fi
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

python_ok() {
    command -v "$1" >/dev/null 2>&1 &&
        "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

python=${PYTHON:-python3}
missing=()
for package in "${apt_packages[@]}"; do
    installed "$package" || missing+=("$package")
done
if ! python_ok "$python"; then
    # Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
    for package in python3 python3-venv; do
        installed "$package" || missing+=("$package")
    done
fi

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
        # Exit status 101 tells invoke-rc.d and deb-systemd-invoke not to start services.
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=yes
        trap 'as_root rm -f "$policy"' EXIT
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ -n "$made_policy" ]; then
        as_root rm -f "$policy"
        trap - EXIT
    fi
fi

if ! python_ok "$python"; then
    python=/usr/bin/python3
    python_ok "$python" || { say "no Python >= 3.11 with venv found"; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$python" --version 2>&1)"
    "$python" -m venv .venv
fi

stamp=.venv/.bootstrap-installed
wanted=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c 'import ovs_sriov_proxy' 2>/dev/null; then
    say "installing the package and its test extra into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$wanted" > "$stamp"
fi

# Faucet, for the end-to-end test through the proxy (integration/test_faucet.py). It pins an
# older os-ken than ours, so it lives in a venv of its own, .venv-faucet, never imported by the
# package: the test runs it as a separate process.
faucet_version=1.10.12
faucet_stamp=.venv-faucet/.bootstrap-installed
faucet_wanted="$faucet_version $(sha256sum scripts/faucet-constraints.txt | cut -d' ' -f1)"
if [ "$(cat "$faucet_stamp" 2>/dev/null)" != "$faucet_wanted" ] || [ ! -x .venv-faucet/bin/faucet ]; then
    say "installing faucet $faucet_version into .venv-faucet"
    [ -x .venv-faucet/bin/python ] || "$python" -m venv .venv-faucet
    .venv-faucet/bin/python -m pip install -q --disable-pip-version-check \
        -c scripts/faucet-constraints.txt "faucet==$faucet_version"
    printf '%s\n' "$faucet_wanted" > "$faucet_stamp"
fi
