#!/usr/bin/env bash
# Bootstrap (idempotent), then run the lab demo on a private OVS sandbox; arguments go to `lab`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
exec .venv/bin/ovs-sriov-proxy lab "$@"
