"""Every crash point (daemon/spool/crashpoints.py), walked on purpose, on a local spool and over
sshfs: a real daemon is armed to SIGKILL itself at one named step of one transition, the
scenario that reaches that step runs, the daemon dies there, and a new daemon on the same
spool (the same host, or for a takeover the host that took over) finishes the work. Each
job must end in the state it must, exactly once, with its result and the user's files; no
status may ever leave `completed`; nothing may be left in queue/ or active/.

The points come from the registry, and the test checks the registry against the calls in
the source, so a new step without a crash test fails here."""

from __future__ import annotations

import ast
import json
import os
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon.spool.crashpoints import ENV, POINTS
from tests.netfs import SshExport
from tests.support import (REPO, Daemon, assert_exactly_once, drop_folder, drop_json, executions, leftovers, wait_for,
                           wait_status)

# Which scenario reaches each point. A point added to POINTS without a line here fails
# test_every_point_has_a_scenario.
POINT_SCENARIO = {
    "stage.intake_made": "plain", "stage.claimed": "plain", "stage.media_moved": "media",
    "accept.id_reserved": "plain", "accept.job_written": "plain", "accept.status_queued": "plain",
    "accept.queued": "plain", "accept.invalid_final": "invalid", "accept.invalid_published": "invalid",
    "claim.moved": "plain", "attempt.marked": "plain", "attempt.running": "plain",
    "commit.final_written": "plain", "commit.renamed": "plain",
    "publish.results_moved": "plain", "publish.inputs_moved": "plain", "publish.status_written": "plain",
    "publish.retired": "plain", "publish.removing": "plain",
    "requeue.cleared": "crash_once", "requeue.moved": "crash_once",
    "takeover.moved": "takeover",
    "cancel.marked": "cancel_api", "cancel.claimed": "cancel_api", "cancel.file_handled": "cancel_file",
    "drain.killed": "drain",
}
SETTINGS = {"VIDSPOOL_WORKERS__DRAIN_SECONDS": "0.5"}
DATA = b"the user's own bytes\n"
PRESET_INBOXES = {"cards", "slideshow"}  # config.toml's presets: folders the daemon made


@dataclass
class Run:
    """One walk of one point: the spool, the daemons, and what each job must end as."""

    root: Path
    log_dir: Path
    markers: Path
    point: str
    expected: dict[str, str] = field(default_factory=dict)  # job id → end state
    inputs: dict[str, set[str]] = field(default_factory=dict)  # job id → names kept in input/
    daemons: list[Daemon] = field(default_factory=list)

    def daemon(self, host: str = "crash-host", armed: bool = True, workers=("cpu",)) -> Daemon:
        d = Daemon(self.root, host=host, workers=list(workers), log_dir=self.log_dir, **SETTINGS)
        self.daemons.append(d)
        return d.start(env={ENV: self.point} if armed else None)

    def probe(self, **params) -> dict:
        return {"kind": "probe", "params": {"marker_dir": str(self.markers), **params}}


class StatusHistory(threading.Thread):
    """Reads the jobs' status.json over and over: a status that leaves `completed` is a bug."""

    def __init__(self, root: Path, ids):
        super().__init__(daemon=True)
        self.root, self.ids, self.stop_flag = root, list(ids), threading.Event()
        self.seen: dict[str, list[str]] = {i: [] for i in self.ids}

    def run(self):
        while not self.stop_flag.is_set():
            for job_id in self.ids:
                try:
                    state = json.loads((self.root / "outbox" / job_id / "status.json").read_text())["state"]
                except (OSError, ValueError, KeyError):
                    continue
                if not self.seen[job_id] or self.seen[job_id][-1] != state:
                    self.seen[job_id].append(state)
            time.sleep(0.01)

    def left_completed(self) -> dict[str, list[str]]:
        return {i: s for i, s in self.seen.items() if "completed" in s and s[s.index("completed"):] != ["completed"]}


def died_at_point(d: Daemon, point: str, timeout: float = 60) -> None:
    """The armed daemon SIGKILLed itself, at that point."""
    try:
        code = d.proc.wait(timeout)
    except Exception:
        d.kill()
        raise AssertionError(f"the daemon did not crash at {point} within {timeout}s:\n{d.log()}")
    assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL:\n{d.log()}"
    assert f'"point": "{point}"' in d.log(), f"killed elsewhere than {point}:\n{d.log()}"


def api_delete(api: str, path: str):
    try:
        urllib.request.urlopen(urllib.request.Request(api + path, method="DELETE"), timeout=10)
    except Exception:  # noqa: BLE001 - the daemon may die before it answers
        pass


# -- scenarios: each arms a daemon, reaches the point, and lets it die --------------------
def plain(run: Run) -> Daemon:
    d = run.daemon()
    drop_folder(run.root / "inbox", "job", {**run.probe(seconds=0.2), "inputs": {"data": "data.bin"}},
                {"data.bin": DATA})
    run.expected["job"], run.inputs["job"] = "completed", {"job.json", "data.bin"}
    return d


def media(run: Run) -> Daemon:
    d = run.daemon()
    inbox = run.root / "inbox"
    (inbox / ".data.bin.part").write_bytes(DATA)
    os.rename(inbox / ".data.bin.part", inbox / "data.bin")
    drop_json(inbox, "job", {**run.probe(seconds=0.2), "inputs": {"data": "data.bin"}})
    run.expected["job"], run.inputs["job"] = "completed", {"job.json", "data.bin"}
    return d


def invalid(run: Run) -> Daemon:
    d = run.daemon()
    drop_folder(run.root / "inbox", "job", {"kind": "probe", "params": {"no_such_param": 1}}, {"data.bin": DATA})
    run.expected["job"], run.inputs["job"] = "failed", {"job.json", "data.bin"}
    return d


def crash_once(run: Run) -> Daemon:
    d = run.daemon()
    drop_folder(run.root / "inbox", "job", run.probe(seconds=0.4, crash_once=str(run.markers / "crashed")))
    run.expected["job"], run.inputs["job"] = "completed", {"job.json"}
    return d


def takeover(run: Run) -> Daemon:
    owner = run.daemon(host="owner", armed=False)
    drop_folder(run.root / "inbox", "job", run.probe(seconds=30))
    wait_status(run.root, "job", {"running"}, daemon=owner)
    taker = run.daemon(host="crash-host")
    owner.kill()  # its lease runs out; the taker takes its job over and dies doing it
    run.expected["job"], run.inputs["job"] = "completed", {"job.json"}
    return taker


def _blocked_victim(run: Run) -> Daemon:
    """One worker busy with `blocker`; `victim` waits in the queue behind it."""
    d = run.daemon()
    drop_folder(run.root / "inbox", "blocker", run.probe(seconds=2))
    wait_status(run.root, "blocker", {"running"}, daemon=d)
    drop_folder(run.root / "inbox", "victim", run.probe())
    wait_status(run.root, "victim", {"queued"}, daemon=d)
    run.expected.update(blocker="completed", victim="canceled")
    run.inputs.update(blocker={"job.json"}, victim={"job.json"})
    return d


def cancel_api(run: Run) -> Daemon:
    d = _blocked_victim(run)
    api_delete(d.api, "/api/v1/jobs/victim")
    return d


def cancel_file(run: Run) -> Daemon:
    d = _blocked_victim(run)
    (run.root / "inbox" / ".victim.cancel.part").touch()
    os.rename(run.root / "inbox" / ".victim.cancel.part", run.root / "inbox" / "victim.cancel")
    return d


def drain(run: Run) -> Daemon:
    d = run.daemon()
    drop_folder(run.root / "inbox", "job", run.probe(seconds=3))
    wait_status(run.root, "job", {"running"}, daemon=d)
    d.proc.send_signal(signal.SIGTERM)  # drain_seconds 0.5: the job is still running then
    run.expected["job"], run.inputs["job"] = "completed", {"job.json"}
    return d


SCENARIOS = {f.__name__: f for f in (plain, media, invalid, crash_once, takeover, cancel_api, cancel_file, drain)}


def walk(root: Path, tmp_path: Path, point: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    run = Run(root, tmp_path, markers, point)
    history = None
    try:
        armed = SCENARIOS[POINT_SCENARIO[point]](run)
        history = StatusHistory(root, run.expected)
        history.start()
        died_at_point(armed, point)
        after = run.daemon(host=armed.host, armed=False)
        for job_id, state in run.expected.items():
            doc = wait_status(root, job_id, timeout=60, daemon=after)
            assert doc["state"] == state, (job_id, doc)
        time.sleep(0.3)  # a wrong rewrite after the end would land now
        check_outcome(run, history)
    finally:
        if history:
            history.stop_flag.set()
        for d in run.daemons:
            if d.proc and d.proc.poll() is None:
                d.stop()


def check_outcome(run: Run, history: StatusHistory) -> None:
    ran = executions(run.markers)
    for job_id, state in run.expected.items():
        doc = json.loads((run.root / "outbox" / job_id / "status.json").read_text())
        assert doc["state"] == state, (job_id, doc)
        kept = set(os.listdir(run.root / "outbox" / job_id / "input"))
        assert kept == run.inputs[job_id], (job_id, kept)
        if "data.bin" in kept:
            assert (run.root / "outbox" / job_id / "input" / "data.bin").read_bytes() == DATA
        if state == "completed":
            assert ran.count(job_id) == 1, f"{job_id} ran {ran.count(job_id)} times to its end"
            assert [f["name"] for f in doc["result"]["files"]] == ["probe.txt"]
            assert (run.root / "outbox" / job_id / "probe.txt").is_file()
        else:
            assert ran.count(job_id) == 0, f"{job_id} ({state}) ran to its end"
            assert doc["error"]["code"] == {"failed": "invalid_job", "canceled": "canceled"}[state], doc
    assert not history.left_completed(), history.seen
    completed = [job_id for job_id, state in run.expected.items() if state == "completed"]
    assert_exactly_once(run.root, completed, run.daemons, journal=run.markers / "runs.jsonl",
                        given_back=1 if POINT_SCENARIO[run.point] == "drain" else 0)
    assert leftovers(run.root) == [], leftovers(run.root)
    left_in_inbox = set(os.listdir(run.root / "inbox")) - PRESET_INBOXES
    assert not left_in_inbox, left_in_inbox


# -- the registry is the code's -------------------------------------------------------------
def points_called_in_the_code() -> set[str]:
    names = set()
    for path in (REPO / "daemon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "hit"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_every_registered_point_is_in_the_code_and_every_call_is_registered():
    assert points_called_in_the_code() == set(POINTS)


def test_every_point_has_a_scenario():
    assert set(POINT_SCENARIO) == set(POINTS), set(POINTS) ^ set(POINT_SCENARIO)


def test_doctor_refuses_an_armed_crash_point(tmp_path):
    import subprocess
    import sys

    from tests.support import base_env

    env = base_env(VIDSPOOL_SPOOL__ROOT=str(tmp_path / "spool"), **{ENV: "commit.renamed"})
    out = subprocess.run([sys.executable, "-m", "daemon", "doctor"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and ENV in out.stdout + out.stderr, out.stdout + out.stderr


def test_an_unknown_crash_point_stops_start_up(tmp_path):
    d = Daemon(tmp_path / "spool", log_dir=tmp_path)
    d.start(wait=False, env={ENV: "no.such.point"})
    assert d.proc.wait(30) != 0
    assert "unknown crash point 'no.such.point'" in d.log()


# -- the walks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("point", list(POINTS))
def test_crash_at_every_point_on_a_local_spool(point, tmp_path):
    walk(tmp_path / "spool", tmp_path, point)


@pytest.fixture(scope="module")
def sshfs_spools(tmp_path_factory):
    """One sshd for the module; each test gets its own folder through one sshfs mount."""
    export = SshExport(tmp_path_factory.mktemp("crash-sshfs")).start()
    mount = export.mount("m")
    yield mount.path
    export.stop()


@pytest.mark.parametrize("point", list(POINTS))
def test_crash_at_every_point_over_sshfs(point, sshfs_spools, tmp_path):
    walk(sshfs_spools / point / "spool", tmp_path, point)
