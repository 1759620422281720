#!/usr/bin/env bash
# What the tests need beyond `make run`: Debian tools the tests start for real.
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v ffprobe >/dev/null || need+=(ffmpeg)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "test-setup: run: sudo apt-get install -y ${need[*]}" >&2; exit 1
  fi
fi
