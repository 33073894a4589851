#!/usr/bin/env bash
# Install what imsp2pd, its tests and its lab need, idempotently:
# Debian packages for the real peers (when root and missing), then a venv in
# .venv with the project (editable) and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(tshark sip-tester aria2 wrk opentracker freediameter chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (run as root to install): ${missing[*]}" >&2
  fi
fi

# pip's output only when it fails (the machines' pip config is noisy).
pip_quiet() {
  local out
  if ! out=$(.venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1); then
    echo "$out" >&2
    return 1
  fi
}

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_quiet --upgrade pip 'setuptools>=68' wheel
pip_quiet -e '.[test,conformance,accel]'
# the hot modules compiled with Cython (only what changed since the last
# build); without a compiler everything runs from source, just slower
.venv/bin/python -m imsp2pd.build_accel build || echo "setup: the modules run from source (no compiled copies)" >&2
