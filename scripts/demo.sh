#!/usr/bin/env bash
# The main job: install what is missing, then run both use cases of the paper
# end to end on a lab with every role (`imsp2p demo`: twistd -n imsp2p
# --role=all, carol publishes, the operator's seeder takes over, consumers buy,
# download from the swarm and play, dave without credit gets 402).
# Extra arguments go to `imsp2p demo` (--consumers N, --size MiB, --origin-kib K).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/imsp2p demo "$@"
