#!/usr/bin/env bash
# Installs vidspool as a systemd service for this checkout.
#   scripts/install-systemd.sh                 install (root): unit, sysusers, tmpfiles, config
#   scripts/install-systemd.sh --render DIR    only write the unit for this checkout into DIR
set -euo pipefail
prefix=$(cd "$(dirname "$0")/.." && pwd)
spool=${VIDSPOOL_SPOOL__ROOT:-/srv/vidspool}
render() {  # the shipped unit names /opt/vidspool and /srv/vidspool; use the real places
  sed -e "s#/opt/vidspool#${prefix}#g" -e "s#/srv/vidspool#${spool}#g" "$prefix/systemd/vidspool.service" > "$1/vidspool.service"
}
if [ "${1:-}" = "--render" ]; then
  render "$2"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
render /etc/systemd/system
sed -e "s#/srv/vidspool#${spool}#g" "$prefix/systemd/vidspool.tmpfiles" > /etc/tmpfiles.d/vidspool.conf
install -m 0644 "$prefix/systemd/vidspool.sysusers" /etc/sysusers.d/vidspool.conf
mkdir -p /etc/vidspool
# Relative paths in a config file are relative to its folder: name this checkout's models/.
[ -f /etc/vidspool/config.toml ] || sed -e "s#^root = \"spool\"#root = \"${spool}\"#" \
  -e "s#^dir = \"models\"#dir = \"${prefix}/models\"#" "$prefix/config.toml" > /etc/vidspool/config.toml
systemd-sysusers
systemd-tmpfiles --create /etc/tmpfiles.d/vidspool.conf
systemctl daemon-reload
echo "installed; start with: systemctl enable --now vidspool"
