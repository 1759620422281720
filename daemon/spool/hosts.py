"""Heartbeats of the daemons sharing a spool, and which of them are dead.

A daemon rewrites hosts/<host>.json with a counter that goes up on every beat. Others
judge it by whether that counter changes, timed on their own monotonic clock: no clocks
are compared across hosts, and mtime is not trusted (1 s resolution on some mounts).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.spool.fsops import atomic_write_json, read_json
from contract.status import utc_now


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class Heartbeat:
    def __init__(self, hosts_dir: Path, host: str, lease_seconds: float):
        self.path = hosts_dir / f"{host}.json"
        self.host = host
        self.lease_seconds = lease_seconds
        self.counter = 0
        self.started_at = utc_now()
        self.boot_id = boot_id()

    def beat(self, state: str = "running", **info) -> None:
        self.counter += 1
        atomic_write_json(self.path, {
            "host": self.host, "pid": os.getpid(), "boot_id": self.boot_id, "counter": self.counter,
            "state": state, "started_at": self.started_at, "updated_at": utc_now(),
            "lease_seconds": self.lease_seconds, **info,
        })

    def other_instance_alive(self) -> int | None:
        """The pid of another live daemon using our host name on this machine, if any."""
        doc = read_json(self.path)
        if not doc or doc.get("state") == "stopped" or doc.get("boot_id") != self.boot_id:
            return None
        pid = doc.get("pid")
        if not isinstance(pid, int) or pid == os.getpid():
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        ours = b"vidspool" in cmdline or b"-m\x00daemon\x00" in cmdline
        return pid if ours and b"run" in cmdline.split(b"\x00") else None


@dataclass
class _Seen:
    counter: object
    changed_at: float
    state: str | None
    moved: bool = False  # the counter changed while we watched: the host is really alive


class LeaseTracker:
    """Watches other hosts' heartbeats; a host whose counter has not moved for
    `lease_seconds` of our time is dead and what it owes may be taken over: its folder under
    each of `owed_roots` (active/: its jobs; webhooks/, deliveries/: its markers)."""

    def __init__(self, hosts_dir: Path, owed_roots: Sequence[Path], me: str, lease_seconds: float):
        self.hosts_dir = hosts_dir
        self.owed_roots = tuple(owed_roots)
        self.me = me
        self.lease_seconds = lease_seconds
        self.seen: dict[str, _Seen] = {}

    def dead_hosts(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        names = set()
        for d, suffix in ((self.hosts_dir, ".json"), *((root, "") for root in self.owed_roots)):
            try:  # hosts/ also holds <host>.pause files (daemon/spool/pause.py): not hosts
                names.update(n[:len(n) - len(suffix)] for n in os.listdir(d) if not n.startswith(".") and n.endswith(suffix))
            except FileNotFoundError:
                pass
        names.discard(self.me)
        dead = []
        for host in sorted(names):
            doc = read_json(self.hosts_dir / f"{host}.json") or {}
            counter = (doc.get("boot_id"), doc.get("pid"), doc.get("counter"))
            seen = self.seen.get(host)
            if seen is None or seen.counter != counter:
                self.seen[host] = seen = _Seen(counter, now, doc.get("state"), moved=seen is not None)
            if not self._has_work(host):
                continue
            if seen.state == "stopped" or now - seen.changed_at >= self.lease_seconds:
                dead.append(host)
        return dead

    def gone_hosts(self, now: float | None = None) -> set[str]:
        """Hosts, busy or not, that stopped or whose lease ran out, as dead_hosts() last saw them."""
        now = time.monotonic() if now is None else now
        return {h for h, s in self.seen.items() if s.state == "stopped" or now - s.changed_at >= self.lease_seconds}

    def _has_work(self, host: str) -> bool:
        for root in self.owed_roots:
            try:
                with os.scandir(root / host) as entries:
                    if any(True for _ in entries):
                        return True
            except FileNotFoundError:
                pass
        return False

    def live_hosts(self, now: float | None = None) -> list[str]:
        """Hosts whose counter moved within the last lease (seen alive, not just present)."""
        now = time.monotonic() if now is None else now
        return sorted(h for h, s in self.seen.items()
                      if s.moved and s.state != "stopped" and now - s.changed_at < self.lease_seconds)

    def other_hosts_not_stopped(self) -> list[str]:
        """Hosts whose heartbeat file does not say they stopped (alive, or died uncleanly)."""
        names = []
        try:
            files = os.listdir(self.hosts_dir)
        except FileNotFoundError:
            return []
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith(".") and name[:-5] != self.me:
                doc = read_json(self.hosts_dir / name) or {}
                if doc.get("state") != "stopped":
                    names.append(name[:-5])
        return names

    def forget(self) -> None:
        """Starts every observation afresh (after our own view of the spool was broken)."""
        self.seen.clear()
