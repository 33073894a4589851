#!/usr/bin/env bash
# The main job: install what is missing, start the lab with every role
# (`twistd -n imsp2p --role=all` with etc/imsp2pd.toml) and drive it.
# It stays in the foreground until Ctrl-C. Extra arguments go to `imsp2p lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/imsp2p lab --keep "$@"
