"""Retention (SPEC §10.5): two daemons sharing a spool remove each ended job's outbox folder
once it is older than [outbox] keep_days, exactly once, one host sweeping at a time, never a
queued or running job nor one whose results are being deleted; `vidspool purge --older-than`
makes the same selection from the command line."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from tests.support import REPO, Daemon, base_env, drop_json, status, wait_all_final, wait_for

KEEP_DAYS = 0.0001  # 8.64 s: jobs really age past it during the test
KEEP_SECONDS = KEEP_DAYS * 86400


def probe(seconds: float = 0.0, **extra) -> dict:
    return {"kind": "probe", "params": {"seconds": seconds, "step_seconds": 0.05, **extra}}


def get(api: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(api + path, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def cancel(api: str, job_id: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{api}/api/v1/jobs/{job_id}", method="DELETE"), timeout=10).close()


def metric(api: str, name: str) -> float:
    text = get(api, "/metrics")[1].decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def events(daemon: Daemon, name: str) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def when(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_two_daemons_remove_each_old_folder_once_never_queued_running_or_locked(tmp_path):
    root = tmp_path / "spool"
    # What a remover killed mid-remove leaves in trash/ (its name carries when it began).
    leftover = root / "trash" / f"ghost.host-x.{int(time.time()) - 3600}-0bad"
    (leftover / "input").mkdir(parents=True)
    (leftover / "video.mp4").write_bytes(b"v" * 5000)
    settings = {"VIDSPOOL_OUTBOX__KEEP_DAYS": str(KEEP_DAYS), "VIDSPOOL_OUTBOX__SWEEP_SECONDS": "0.3"}
    a, b = Daemon(root, host="a", **settings), Daemon(root, host="b", **settings)
    try:
        a.start()
        b.start()
        quick = [f"q{i:02d}" for i in range(24)]
        for i, job_id in enumerate(quick):
            drop_json(root / "inbox", job_id, probe(fail="unsupported_input") if i % 4 == 3 else probe())
        docs = wait_all_final(root, quick, daemon=a)
        assert collections.Counter(d["state"] for d in docs.values()) == {"completed": 18, "failed": 6}
        (root / "outbox" / "q00" / ".deleting").mkdir()  # its results are being deleted right now

        # Four slow jobs: one runs on each daemon's single worker, two wait in the queue.
        slow = [f"s{i}" for i in range(4)]
        for job_id in slow:
            drop_json(root / "inbox", job_id, probe(seconds=600))
        wait_for(lambda: sorted((status(root, j) or {}).get("state", "") for j in slow) == ["queued", "queued", "running", "running"],
                 timeout=30, what="two slow jobs running, two queued")
        slow_since = time.time()

        outbox = root / "outbox"
        wait_for(lambda: not any((outbox / j).exists() for j in quick[1:]), timeout=60, what="old folders removed")
        # A sweep after the queued jobs were older than keep_days too: they were looked at and kept.
        wait_for(lambda: any(when(e) > slow_since + KEEP_SECONDS + 1 for d in (a, b) for e in events(d, "retention.swept")),
                 timeout=30, what="a sweep once the queued jobs are old")
        assert sorted(status(root, j)["state"] for j in slow) == ["queued", "queued", "running", "running"]
        assert all((outbox / j / "status.json").is_file() for j in slow)
        assert (outbox / "q00" / "status.json").is_file(), "removed while its results were being deleted"

        (outbox / "q00" / ".deleting").rmdir()  # the deleter is done: now it goes too
        wait_for(lambda: not (outbox / "q00").exists(), timeout=30, what="q00 removed once unlocked")
        wait_for(lambda: not [n for n in os.listdir(root / "trash") if not n.startswith(".")], timeout=30,
                 what="trash/ empty")

        # Each folder removed exactly once, by one of the two daemons; the leftover once.
        removed = [e for d in (a, b) for e in events(d, "retention.removed")]
        assert collections.Counter(e["job_id"] for e in removed) == collections.Counter(quick)
        assert all(e["bytes"] > 0 for e in removed)
        leftovers = [e for d in (a, b) for e in events(d, "retention.leftover_removed")]
        assert [(e["name"], e["bytes"]) for e in leftovers] == [(leftover.name, 5000)]

        # One host sweeps at a time (trash/.sweeping): their sweeps never overlap.
        spans = {d.host: [(when(e) - e["seconds"], when(e)) for e in events(d, "retention.swept")] for d in (a, b)}
        assert spans["a"] and spans["b"], "both daemons sweep"
        for start, end in spans["a"]:
            for other_start, other_end in spans["b"]:
                assert end <= other_start + 0.002 or other_end <= start + 0.002, (start, end, other_start, other_end)

        # /metrics counts what each daemon removed and freed.
        assert sum(metric(d.api, "vidspool_retention_removed_total") for d in (a, b)) == len(quick)
        freed = sum(metric(d.api, "vidspool_retention_freed_bytes_total") for d in (a, b))
        assert freed == sum(e["bytes"] for e in removed) + 5000 > 5000

        # The read model copes: a removed job is 404, the statistics count what is left.
        assert get(a.api, "/api/v1/jobs/q05")[0] == 404 and get(b.api, "/api/v1/jobs/q05/download")[0] == 404
        wait_for(lambda: json.loads(get(a.api, "/api/v1/stats")[1])["requests"]["total"] == len(slow), timeout=15,
                 what="statistics without the removed jobs")
        for job_id in slow:
            cancel(a.api, job_id)
    finally:
        for d in (a, b):
            d.stop()


def _age(root, job_id: str, days: float) -> None:
    """Makes a job look as if it ended `days` ago: its finished_at and its status's mtime."""
    path = root / "outbox" / job_id / "status.json"
    doc = json.loads(path.read_text())
    then = time.time() - days * 86400
    doc["finished_at"] = datetime.fromtimestamp(then, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    tmp = path.with_name(".status.aged")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    os.utime(path, (then, then))


def test_purge_older_than_dry_run_state_and_removal(daemon):
    root = daemon.root
    drop_json(root / "inbox", "slow", probe(seconds=600))
    for job_id in ("c1", "c2", "young"):
        drop_json(root / "inbox", job_id, probe())
    for job_id in ("f1", "f2"):
        drop_json(root / "inbox", job_id, probe(fail="unsupported_input"))
    wait_all_final(root, ["c1", "c2", "young", "f1", "f2"], daemon=daemon)
    wait_for(lambda: (status(root, "slow") or {}).get("state") == "running", what="slow runs")
    for job_id in ("c1", "c2", "f1", "f2"):
        _age(root, job_id, 3)
    env = base_env(**daemon.settings)

    def purge(*args):
        return subprocess.run([sys.executable, "-m", "daemon", "purge", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)

    def listed(out: str, verb: str) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in re.finditer(rf"^{verb} (\S+) \(.*\): (\d+) bytes$", out, re.M)}

    outbox = root / "outbox"
    dry = purge("--older-than", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    would = listed(dry.stdout, "would remove")
    assert sorted(would) == ["c1", "c2", "f1", "f2"] and all(n > 0 for n in would.values())
    assert f"would remove 4 job folders that ended over 1 days ago: {sum(would.values())} bytes (dry run" in dry.stdout
    assert all((outbox / j).is_dir() for j in would)

    failed = purge("--older-than", "1", "--state", "failed")
    assert failed.returncode == 0, failed.stderr
    assert listed(failed.stdout, "removed") == {"f1": would["f1"], "f2": would["f2"]}
    assert not (outbox / "f1").exists() and not (outbox / "f2").exists()
    assert (outbox / "c1").is_dir() and (outbox / "c2").is_dir()

    rest = purge("--older-than", "1")
    assert rest.returncode == 0, rest.stderr
    assert listed(rest.stdout, "removed") == {"c1": would["c1"], "c2": would["c2"]}
    assert f"removed 2 job folders that ended over 1 days ago: {would['c1'] + would['c2']} bytes" in rest.stdout
    assert sorted(n for n in os.listdir(outbox) if not n.startswith(".")) == ["slow", "young"]
    assert status(root, "slow")["state"] == "running" and status(root, "young")["state"] == "completed"
    assert [n for n in os.listdir(root / "trash") if not n.startswith(".")] == []
    assert purge("--older-than", "1").stdout.strip() == "removed 0 job folders that ended over 1 days ago: 0 bytes"

    for wrong in ([], ["c1", "--older-than", "1"], ["--dry-run", "young"], ["--older-than", "-1"]):
        bad = purge(*wrong)
        assert bad.returncode == 2 and "vidspool:" in bad.stderr, (wrong, bad.stderr)
    assert (outbox / "young").is_dir()
    cancel(daemon.api, "slow")
