#!/usr/bin/env bash
# What the tests need beyond `make run`: Debian tools the tests start for real.
# Network shares (tests/netfs.py): sshd + sshfs, Samba (smbd, smbclient, smbpasswd), rclone.
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v ffprobe >/dev/null || need+=(ffmpeg)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v sshfs >/dev/null || need+=(sshfs)
[ -x /usr/sbin/smbd ] || need+=(samba)
command -v smbclient >/dev/null || need+=(smbclient)
command -v rclone >/dev/null || need+=(rclone)
command -v fusermount >/dev/null || command -v fusermount3 >/dev/null || need+=(fuse3)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    # Quiet unless it fails (debconf's chatter goes to stderr).
    if ! log=$( { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${need[@]}"; } 2>&1 ); then
      echo "$log" >&2; echo "test-setup: could not install: ${need[*]}" >&2; exit 1
    fi
    # Debian's postinst may start the system daemons of what was just installed; the tests
    # start their own on loopback ports, so stop those (only those) where there is no systemd.
    if ! [ -d /run/systemd/system ]; then
      svcs=()
      [[ " ${need[*]} " == *" openssh-server "* ]] && svcs+=(ssh)
      [[ " ${need[*]} " == *" samba "* ]] && svcs+=(smbd nmbd samba-ad-dc)
      for svc in "${svcs[@]}"; do
        if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
      done
    fi
  else
    echo "test-setup: run: sudo apt-get install -y ${need[*]}" >&2; exit 1
  fi
fi
# sshd's privilege separation directory (normally made by systemd's RuntimeDirectory).
if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd && chmod 0755 /run/sshd; fi
bash "$(dirname "$0")/browser-setup.sh"
