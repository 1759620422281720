#!/usr/bin/env bash
# Installs everything vidspool needs on a Debian machine, idempotently:
# system packages (when root, else prints the command), then .venv in stages.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: torch.compile's CPU backend (inductor) builds its kernels with it.
APT_PACKAGES=(ffmpeg espeak-ng fonts-dejavu-core systemd g++)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.vidspool-installed
want=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install -q --no-input)
# torch first and alone, so later stages cannot pull a different build.
for stage in requirements/[0-9]-*.txt; do
  echo "setup: pip install -r $stage"
  "${pip[@]}" -r "$stage"
done
"${pip[@]}" --no-deps -e .
echo "$want" > "$stamp"
