"""Pause and resume (SPEC §10.4): a PAUSE file in the spool root stops claims on every host
sharing it, hosts/<host>.pause on one; drops still queue; `now` requeues running jobs without
using an attempt; `free_memory` unloads idle workers' models."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from tests.support import (REPO, Daemon, base_env, drop_json, executions, health, holds, status, wait_all_final,
                           wait_for, wait_status)


def cli(root, *args: str, host: str = "cli-host") -> subprocess.CompletedProcess:
    env = base_env(VIDSPOOL_SPOOL__ROOT=str(root), VIDSPOOL_SPOOL__HOST=host)
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def post(api: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(api + path, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(api: str, path: str) -> dict:
    with urllib.request.urlopen(api + path, timeout=10) as r:
        return json.loads(r.read())


def probe(markers, seconds: float = 0.0) -> dict:
    return {"kind": "probe", "params": {"seconds": seconds, "marker_dir": str(markers)}}


def test_a_pause_file_stops_claims_on_every_host_and_drops_still_queue(tmp_path, markers):
    root = tmp_path / "spool"
    a, b = Daemon(root, host="host-a").start(), Daemon(root, host="host-b").start()
    try:
        done = cli(root, "pause", "--reason", "maintenance")
        assert done.returncode == 0, done.stderr
        assert "paused (all hosts: maintenance)" in done.stdout
        for d in (a, b):  # both obey it, and stay healthy saying so
            wait_for(lambda d=d: health(d.api)[1].get("paused", {}).get("reason") == "maintenance", 10, f"{d.host} paused")
            code, body = health(d.api)
            assert code == 200 and body["status"] == "ok" and body["paused"]["scope"] == "all"
            assert get(d.api, "/api/v1/queue")["paused"]["reason"] == "maintenance"
        ids = [f"held-{i}" for i in range(4)]
        for job_id in ids:
            drop_json(root / "inbox", job_id, probe(markers))
        for job_id in ids:
            wait_status(root, job_id, {"queued"}, daemon=a)
        # Neither host claims for several of their turns (rescan 0.5 s, pause checks 0.25 s).
        holds(lambda: all(status(root, j)["state"] == "queued" for j in ids) and not executions(markers), 3,
              "paused jobs stay queued")
        assert len(get(a.api, "/api/v1/queue")["queued"]) == 4
        summary = json.loads(cli(root, "status").stdout)
        assert summary["paused"]["reason"] == "maintenance" and summary["queued"] == 4
        assert summary["hosts"]["host-b"]["paused"]["scope"] == "all"
        done = cli(root, "resume")
        assert done.returncode == 0 and "removed PAUSE" in done.stdout, done.stdout + done.stderr
        finals = wait_all_final(root, ids, daemon=a)
        assert {d["state"] for d in finals.values()} == {"completed"}
        assert sorted(executions(markers)) == sorted(ids)  # each ran once
        # A host that ran none of them reads the pause files again at its next turn (rescan 0.5 s).
        wait_for(lambda: "paused" not in health(a.api)[1] and get(b.api, "/api/v1/queue")["paused"] is None, 10,
                 "both hosts resumed")
    finally:
        a.stop(), b.stop()


def test_a_host_pause_stops_only_that_host(tmp_path, markers):
    root = tmp_path / "spool"
    a, b = Daemon(root, host="host-a").start(), Daemon(root, host="host-b").start()
    try:
        code, body = post(a.api, "/api/v1/pause", {"host": "host-a", "reason": "draining a"})
        assert code == 200 and body["paused"]["scope"] == "host" and body["queue_paused"]["host"] == "host-a"
        assert (root / "hosts" / "host-a.pause").is_file()
        wait_for(lambda: health(a.api)[1].get("paused"), 10, "host-a paused")
        assert "paused" not in health(b.api)[1]
        ids = [f"one-{i}" for i in range(3)]
        for job_id in ids:
            drop_json(root / "inbox", job_id, probe(markers))
        finals = wait_all_final(root, ids, daemon=b)
        assert {d["host"] for d in finals.values()} == {"host-b"}
        code, body = post(b.api, "/api/v1/resume", {"host": "host-a"})
        assert code == 200 and body["removed"] == ["hosts/host-a.pause"]
        wait_for(lambda: "paused" not in health(a.api)[1], 10, "host-a resumed")
    finally:
        a.stop(), b.stop()


def test_pause_now_requeues_a_running_job_without_using_an_attempt(tmp_path, markers):
    root = tmp_path / "spool"
    d = Daemon(root).start()
    try:
        drop_json(root / "inbox", "long", {**probe(markers, seconds=30), "max_attempts": 1})
        wait_for(lambda: (status(root, "long") or {}).get("step"), 20, "the job running")
        code, body = post(d.api, "/api/v1/pause", {"now": True})
        assert code == 200 and body["paused"]["now"] is True
        queued = wait_status(root, "long", {"queued"}, timeout=20, daemon=d)
        assert queued["attempt"] == 0 and "paused" in queued["message"]
        assert not list((root / "queue").glob("*-long/.attempt-*"))  # the attempt is not counted
        holds(lambda: status(root, "long")["state"] == "queued", 1, "it stays queued while paused")
        post(d.api, "/api/v1/resume")
        running = wait_status(root, "long", {"running"}, timeout=20, daemon=d)
        # max_attempts = 1 and it runs again as attempt 1: the paused attempt was not spent.
        assert running["attempt"] == 1
        d.stop()  # SIGTERM requeues it again (also without an attempt)
    finally:
        d.stop()


def test_pause_checks_its_input_and_the_page_says_paused(tmp_path):
    root = tmp_path / "spool"
    d = Daemon(root).start()
    try:
        assert post(d.api, "/api/v1/pause", {"now": "yes"})[0] == 400
        code, body = post(d.api, "/api/v1/pause", {"host": "../etc"})
        assert code == 400 and "host" in body["error"]["message"]
        assert post(d.api, "/api/v1/pause", {"bogus": 1})[0] == 400
        assert not (root / "PAUSE").exists()
        (root / "PAUSE").write_text("not json")  # a hand-made file still pauses
        wait_for(lambda: health(d.api)[1].get("paused"), 10, "paused by a hand-made file")
        assert "not JSON" in health(d.api)[1]["paused"]["reason"]
        status_line = json.loads((root / "hosts" / "test-host.json").read_text())
        assert status_line["paused"]["scope"] == "all"
        code, body = post(d.api, "/api/v1/resume")
        assert code == 200 and body["removed"] == ["PAUSE"] and body["queue_paused"] is None
    finally:
        d.stop()


def test_pause_free_memory_unloads_idle_workers_models(tmp_path, tiny_models):
    root = tmp_path / "spool"
    d = Daemon(root, VIDSPOOL_MODELS=json.dumps({"tiny": {"path": str(tiny_models / "wan-t2v")}})).start()
    try:
        code, _ = post(d.api, "/api/v1/models/tiny/load")
        assert code == 202
        wait_for(lambda: get(d.api, "/api/v1/queue")["devices"][0]["models"] == ["tiny"], 120, "tiny loaded")
        post(d.api, "/api/v1/pause", {"free_memory": True})
        wait_for(lambda: get(d.api, "/api/v1/queue")["devices"][0]["models"] == [], 60, "models unloaded")
        assert any(e.get("event") == "worker.freeing_memory" for e in d.log_events())
    finally:
        d.stop()
