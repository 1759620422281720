"""Test support: real daemon processes on a real spool folder."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"
FINAL = {"completed", "failed", "canceled"}


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSPOOL_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(REPO)])
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


class Daemon:
    """`vidspool run` as a child process, configured through the environment."""

    def __init__(self, root: Path, host: str = "test-host", workers: list[str] | None = None,
                 log_dir: Path | None = None, **settings: str):
        self.root = Path(root)
        self.host = host
        self.settings = {
            "VIDSPOOL_SPOOL__ROOT": str(self.root),
            "VIDSPOOL_SPOOL__HOST": host,
            "VIDSPOOL_SPOOL__STABLE_SECONDS": "1",
            "VIDSPOOL_SPOOL__RESCAN_SECONDS": "0.5",
            "VIDSPOOL_SPOOL__HEARTBEAT_SECONDS": "0.5",
            "VIDSPOOL_SPOOL__LEASE_SECONDS": "4",
            "VIDSPOOL_WORKERS__DEVICES": json.dumps(workers or ["cpu"]),
            "VIDSPOOL_WORKERS__RESTART_BACKOFF_SECONDS": "0.1",
            "VIDSPOOL_WORKERS__DRAIN_SECONDS": "5",
            "VIDSPOOL_API__PORT": "0",
            "VIDSPOOL_LOG__FORMAT": "json",
            # No model folders unless a test names some (not the developer's models/).
            "VIDSPOOL_REGISTRY__DIR": str(self.root.parent / "no-models"),
        }
        self.settings.update(settings)
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(log_dir or self.root.parent) / f"daemon-{host}.log"

    def start(self, wait: bool = True, env: dict | None = None) -> "Daemon":
        self.root.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"], cwd=REPO,
            env=base_env(**self.settings, **(env or {})), stdout=self._log, stderr=subprocess.STDOUT,
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()  # a daemon that never got ready must not outlive the test
                raise
        return self

    @property
    def heartbeat(self) -> dict:
        try:
            return json.loads((self.root / "hosts" / f"{self.host}.json").read_text())
        except (OSError, json.JSONDecodeError):  # rclone: EIO when a read races a replace
            return {}

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}:\n{self.log()}"
            hb = self.heartbeat
            if hb.get("pid") == self.proc.pid and hb.get("api_url") and hb.get("workers") and all(w["ready"] for w in hb["workers"]):
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout}s:\n{self.log()}")

    @property
    def api(self) -> str:
        return self.heartbeat["api_url"]

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-6000:]
        except FileNotFoundError:
            return ""

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not stop in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def drop_json(inbox: Path, name: str, doc: dict) -> Path:
    """Drops NAME.json the safe way: written under a dot-name, then renamed."""
    tmp = inbox / f".{name}.json.part"
    tmp.write_text(json.dumps(doc))
    final = inbox / f"{name}.json"
    os.rename(tmp, final)
    return final


def drop_folder(inbox: Path, name: str, doc: dict, files: dict[str, bytes] | None = None) -> Path:
    tmp = inbox / f".{name}.part"
    tmp.mkdir()
    (tmp / "job.json").write_text(json.dumps(doc))
    for fname, data in (files or {}).items():
        (tmp / fname).write_bytes(data)
    final = inbox / name
    os.rename(tmp, final)
    return final


def status(root: Path, job_id: str) -> dict | None:
    try:
        return json.loads((Path(root) / "outbox" / job_id / "status.json").read_text())
    except (OSError, json.JSONDecodeError):  # polled again; rclone may answer EIO mid-replace
        return None


def wait_status(root: Path, job_id: str, states=FINAL, timeout: float = 60, daemon: Daemon | None = None) -> dict:
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        doc = status(root, job_id)
        if doc and doc["state"] in states:
            return doc
        time.sleep(0.02)
    raise AssertionError(f"{job_id}: wanted {states}, last status {doc}\n{daemon.log() if daemon else ''}")


def wait_all_final(root: Path, ids: list[str], timeout: float = 120, daemon=None) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while time.monotonic() < deadline and len(done) < len(ids):
        for job_id in ids:
            if job_id not in done:
                doc = status(root, job_id)
                if doc and doc["state"] in FINAL:
                    done[job_id] = doc
        time.sleep(0.1)
    missing = [i for i in ids if i not in done]
    assert not missing, f"{len(missing)} jobs not final, e.g. {missing[:5]}: {[status(root, m) for m in missing[:3]]}\n{daemon.log() if daemon else ''}"
    return done


def wait_for(predicate, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def holds(predicate, seconds: float, what: str = "") -> None:
    """Asserts that `predicate` stays true, polled, for `seconds` (what must NOT happen in a
    while: no claim while paused, no second delivery)."""
    deadline = time.monotonic() + seconds
    while True:
        assert predicate(), f"no longer true: {what}"
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def health(api: str) -> tuple[int, dict]:
    """GET /api/v1/health of a daemon: (HTTP status, body)."""
    try:
        with urllib.request.urlopen(api + "/api/v1/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def leftovers(root: Path) -> list[str]:
    """Job folders still in queue/ or active/ (none once every job is final)."""
    left = list(os.listdir(Path(root) / "queue"))
    for host in os.listdir(Path(root) / "active"):
        left += [f"{host}/{n}" for n in os.listdir(Path(root) / "active" / host)]
    return left


def executions(marker_dir: Path) -> list[str]:
    try:
        return (marker_dir / "executions.log").read_text().split()
    except FileNotFoundError:
        return []


def all_personalities(face: Path, small: dict) -> dict[str, dict]:
    """[presets] and [compat] for all five seed personalities on loopback (free ports), with
    presets small enough for a CPU: `small` text-to-video params, a narrow narrated video, a
    480p talking head speaking over `face`."""
    presets = {"small": {"kind": "text-to-video", "params": small},
               "narrow": {"kind": "narrated-video", "params": {"width": 160, "height": 90, "fps": 5}},
               "head": {"kind": "talking-head", "params": {"resolution": "480p", "fps": 10}}}
    compat = {"heygem": {"listen": "127.0.0.1:0", "default_face": str(face), "preset": "head"},
              "story": {"listen": "127.0.0.1:0", "preset": "narrow"},
              "paksatalker": {"listen": "127.0.0.1:0", "default_face": str(face), "preset": "head"},
              "visualizr": {"listen": "127.0.0.1:0", "preset": "small"},
              "wan": {"listen": "127.0.0.1:0", "preset": "small"}}
    return {"presets": presets, "compat": compat}


@dataclass(frozen=True)
class ProbeRun:
    """One execution of a probe job (tests/plugins), read from its journal: who ran it, its
    first and last record, and whether it ran to its end."""

    run: str
    host: str
    attempt: int
    pid: int
    first: float
    last: float
    ended: bool


def probe_runs(journal: Path) -> dict[str, list[ProbeRun]]:
    """job → its executions in the order they started, from the probe's journal (a line at
    the start, at every step and at the end of each; `marker_dir/runs.jsonl` by default)."""
    seen: dict[str, dict[str, dict]] = collections.defaultdict(dict)
    try:
        lines = Path(journal).read_text().splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        r = json.loads(line)
        run = seen[r["job"]].setdefault(r["run"], {"run": r["run"], "host": r["host"], "attempt": r["attempt"],
                                                   "pid": r["pid"], "first": r["t"], "last": r["t"], "ended": False})
        run["first"], run["last"] = min(run["first"], r["t"]), max(run["last"], r["t"])
        run["ended"] = run["ended"] or r["event"] == "end"
    return {job: sorted((ProbeRun(**r) for r in runs.values()), key=lambda r: r.first) for job, runs in seen.items()}


def logged_events(daemons: list[Daemon], event: str) -> collections.Counter:
    """job id → how many EVENT lines all these daemons logged (each log file once: a
    restarted daemon appends to its own)."""
    counts: collections.Counter = collections.Counter()
    for path in {d.log_path for d in daemons}:
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:  # a daemon SIGKILLed mid-line
                continue
            if isinstance(doc, dict) and doc.get("event") == event:
                counts[doc.get("job_id")] += 1
    return counts


def assert_exactly_once(root: Path, ids, daemons: list[Daemon], journal: Path | None = None, watcher=None,
                        cut_off_hosts: tuple[str, ...] = (), given_back: int = 0) -> dict[str, list[ProbeRun]]:
    """The README's "exactly once", as tested, for every job of IDS:

    - it ended `completed`, and all the daemons' logs (restarts included) hold exactly one
      `job.completed` for it: it completed once and was published once;
    - with the probe's JOURNAL: it ran at least once and at most as often as its status
      counts attempts (a run cut short by a crash is run again, nothing more), plus the
      GIVEN_BACK runs a drain or a pause stopped (put back without an attempt); no two runs
      overlapped in time (a run's last record comes before the next one's start), except
      runs on CUT_OFF_HOSTS (a host whose spool mount died finishes its run, and its result
      is dropped); and the published result (probe.txt names its run) is from a run that
      ran to its end, on a host that was not cut off;
    - with a WATCHER (tests/chaos.py's StatusWatcher), its status, once seen `completed`,
      never said anything else.

    Returns the runs per job, for the caller's own counts."""
    ids = list(ids)
    completed = logged_events(daemons, "job.completed")
    runs = probe_runs(journal) if journal is not None else {}
    left = {entry[0] for entry in watcher.left_completed} if watcher is not None else set()
    for job_id in ids:
        doc = status(root, job_id)
        assert doc is not None and doc["state"] == "completed", (job_id, doc)
        assert completed[job_id] == 1, f"{job_id}: job.completed logged {completed[job_id]} times"
        assert job_id not in left, (job_id, [entry for entry in watcher.left_completed if entry[0] == job_id])
        if journal is None:
            continue
        mine = runs.get(job_id, [])
        assert 1 <= len(mine) <= doc["attempt"] + given_back, (job_id, doc["attempt"], mine)
        connected = [r for r in mine if r.host not in cut_off_hosts]
        for before, after in zip(connected, connected[1:]):
            assert before.last < after.first, f"{job_id}: two runs overlapped: {before} and {after}"
        published = (Path(root) / "outbox" / job_id / "probe.txt").read_text().split(" run ")[1].split()[0]
        assert any(r.run == published and r.ended for r in connected), f"{job_id}: published {published}, runs {mine}"
    return runs
