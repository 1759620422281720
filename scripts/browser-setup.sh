#!/usr/bin/env bash
# The real-browser test (tests/test_web_page.py) drives Debian's chromium through
# chromium-driver. Idempotent: nothing to do when both already answer --version.
set -euo pipefail
if chromium --version >/dev/null 2>&1 && chromedriver --version >/dev/null 2>&1; then
  exit 0
fi
pkgs=(chromium chromium-driver)
if [ "$(id -u)" != 0 ]; then
  echo "browser-setup: run: sudo apt-get update && sudo apt-get install -y ${pkgs[*]}" >&2
  exit 1
fi
# Quiet unless it fails (debconf's chatter goes to stderr).
if ! log=$( { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${pkgs[@]}"; } 2>&1 ); then
  echo "$log" >&2; echo "browser-setup: could not install: ${pkgs[*]}" >&2; exit 1
fi
if ! chromium --version >/dev/null 2>&1 || ! chromedriver --version >/dev/null 2>&1; then
  echo "browser-setup: chromium or chromedriver installed but does not run" >&2; exit 1
fi
