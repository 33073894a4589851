#!/usr/bin/env bash
# The test command: install what is missing, then run the whole suite
# (unit, protocol, integration, conformance against the real peers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
