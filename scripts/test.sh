#!/usr/bin/env bash
# Bootstrap (idempotent), then run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q "$@"
