"""Model download from the Hugging Face hub (daemon/downloads.py): POST /api/v1/models/download
and `vidspool models download` against a real hub on loopback (tests/hubserver.py, HF_ENDPOINT)
serving the tiny Wan text-to-video model of scripts/tiny_models.py in the hub's file layout.

A real daemon (HF_HUB_OFFLINE=0 for it alone, its hub cache in a temp dir) downloads in the
background: the model list shows the bytes while a file is held back, then the model is
registered (a link in [registry] dir to the snapshot in the hub cache) and a text-to-video job
naming it makes an MP4. A repo without model_index.json, a repo the hub does not have and a hub
that dies mid-download end failed with their errors in the model list; a retry (the CLI, --wait)
succeeds. Restarted offline, the daemon still lists and runs the models, never asks the hub,
and refuses downloads with the offline error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.hubserver import HubServer
from tests.support import REPO, Daemon, base_env, wait_for, wait_status

sys.path.insert(0, str(REPO / "scripts"))
from tiny_models import FAMILIES  # noqa: E402

WAN = "vidspool-test/tiny-wan"
RETRY = "vidspool-test/tiny-wan-retry"
PLAIN = "vidspool-test/not-diffusers"
MISSING = "vidspool-test/nope"
OTHER = "vidspool-other/tiny-wan"  # the same last part as WAN
HELD = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def hub(tiny_models, tmp_path_factory):
    plain = tmp_path_factory.mktemp("plain-repo")
    (plain / "config.json").write_text('{"model_type": "bert"}')
    (plain / "model.safetensors").write_bytes(os.urandom(4096))
    server = HubServer({WAN: tiny_models / "wan-t2v", RETRY: tiny_models / "wan-t2v", OTHER: tiny_models / "wan-t2v",
                         PLAIN: plain}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("download")


def settings(base: Path, hub: HubServer, offline: bool) -> dict[str, str]:
    return {"VIDSPOOL_REGISTRY__DIR": str(base / "models"), "HF_HOME": str(base / "hf"), "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DOWNLOAD_TIMEOUT": "30"}


@pytest.fixture(scope="module")
def daemons(base, hub):
    """The online daemon first; test_restart_offline replaces it by an offline one."""
    running = {"d": Daemon(base / "spool", workers=["cpu"], **settings(base, hub, offline=False)).start()}
    yield running
    running["d"].stop()


@pytest.fixture
def d(daemons) -> Daemon:
    return daemons["d"]


def call(d: Daemon, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(d.api + "/api/v1" + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def models(d: Daemon) -> dict[str, dict]:
    status, body = call(d, "GET", "/models")
    assert status == 200, body
    return {m["name"]: m for m in body["models"]}


def wait_download(d: Daemon, name: str, states: tuple[str, ...], timeout: float = 60) -> dict:
    wait_for(lambda: (models(d).get(name, {}).get("download") or {}).get("state") in states, timeout,
             f"{name} to be {states}: {models(d).get(name)}\n{d.log()}")
    return models(d)[name]


def vidspool(d: Daemon, *args: str) -> subprocess.CompletedProcess:
    port = d.api.rsplit(":", 1)[1]
    env = base_env(VIDSPOOL_SPOOL__ROOT=str(d.root), VIDSPOOL_SPOOL__HOST="cli-host",
                   VIDSPOOL_API__HOST="127.0.0.1", VIDSPOOL_API__PORT=port)
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def generate(d: Daemon, model: str) -> dict:
    """A text-to-video job naming `model`, through the API; the MP4 checked with ffprobe."""
    t = FAMILIES["wan-t2v"]["test_size"]
    params = {"prompt": "a fox in snow", "width": t["width"], "height": t["height"], "num_frames": t["num_frames"],
              "num_inference_steps": t["steps"], "fps": 8}
    status, body = call(d, "POST", "/jobs", {"kind": "text-to-video", "model": model, "params": params})
    assert status == 202, body
    doc = wait_status(d.root, body["id"], timeout=120, daemon=d)
    assert doc["state"] == "completed", (doc.get("error"), d.log())
    assert doc["result"]["model"]["name"] == model
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "json",
                            str(d.root / "outbox" / body["id"] / "video.mp4")],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"], int(stream["nb_read_frames"])) == (
        "h264", t["width"], t["height"], t["num_frames"]), stream
    return doc


def repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- the tests, in order: they share one spool, hub cache and registry ------------------------
def test_download_shows_progress_registers_and_runs_a_job(d, hub, base, tiny_models):
    release = hub.hold(WAN, HELD)
    status, started = call(d, "POST", "/models/download", {"repo": WAN})
    assert status == 202, started
    assert (started["repo"], started["revision"], started["name"], started["state"]) == (WAN, "main", "tiny-wan", "downloading")
    again = call(d, "POST", "/models/download", {"repo": WAN, "revision": "main"})
    assert again[0] == 202 and again[1]["started_at"] == started["started_at"]  # the same download
    assert call(d, "POST", "/models/download", {"repo": WAN, "revision": "v2"})[0] == 409  # not while it runs

    total = repo_bytes(tiny_models / "wan-t2v")
    held = (tiny_models / "wan-t2v" / HELD).stat().st_size
    # Every file but the held one arrives; the list shows it, not yet available.
    wait_for(lambda: (models(d)["tiny-wan"]["download"] or {}).get("bytes_done") == total - held, 30,
             f"progress: {models(d).get('tiny-wan')}")
    entry = models(d)["tiny-wan"]
    assert entry["download"]["state"] == "downloading" and entry["download"]["bytes_total"] == total
    assert entry["available"] is False and entry["problem"] == f"downloading from the hub: {total - held} of {total} bytes"
    assert entry["repo"] == WAN
    release.set()

    entry = wait_download(d, "tiny-wan", ("downloaded", "failed"))
    assert entry["download"]["state"] == "downloaded", entry
    assert entry["available"] and entry["download"]["bytes_done"] == total and entry["download"]["error"] is None
    assert entry["download"]["finished_at"] >= entry["download"]["started_at"] == started["started_at"]
    snapshot = base / "hf" / "hub" / "models--vidspool-test--tiny-wan" / "snapshots" / hub.repos[WAN].sha
    shown = f"hub/models--vidspool-test--tiny-wan/snapshots/{hub.repos[WAN].sha}"  # no host path in an answer
    assert entry["folder"] == entry["download"]["folder"] == entry["path"] == shown
    assert entry["repo"] == WAN and "text-to-video" in entry["kinds"]
    link = base / "models" / "tiny-wan"
    assert link.is_symlink() and link.resolve() == snapshot  # registered, stored once: in the hub cache
    assert (snapshot / "model_index.json").read_bytes() == (tiny_models / "wan-t2v" / "model_index.json").read_bytes()
    fetched = {p for m, p in hub.requests if m == "GET" and "/resolve/" in p and p.startswith(f"/{WAN}/")}
    assert len(fetched) == len(hub.repos[WAN].files)
    generate(d, "tiny-wan")


def test_a_name_taken_by_another_repo_gets_the_org_in_it(d, base):
    status, started = call(d, "POST", "/models/download", {"repo": OTHER})
    assert status == 202 and started["name"] == "vidspool-other--tiny-wan", started
    entry = wait_download(d, "vidspool-other--tiny-wan", ("downloaded", "failed"))
    assert entry["available"] and entry["repo"] == OTHER, entry
    assert models(d)["tiny-wan"]["repo"] == WAN  # the first one is untouched
    assert (base / "models" / "tiny-wan").resolve() != (base / "models" / "vidspool-other--tiny-wan").resolve()


def test_bad_requests_are_refused_at_once(d):
    for body, words in [({"repo": "not a repo"}, "ORG/NAME"), ({"repo": "org--x/y"}, "ORG/NAME"),
                        ({"repo": 7}, "ORG/NAME"), ({"repo": WAN, "revision": "../../etc"}, "revision"),
                        ({"repo": WAN, "colour": "red"}, "colour"), ({}, "repo is required"),
                        (["x"], "JSON object")]:
        status, answer = call(d, "POST", "/models/download", body)
        assert status == 400 and answer["error"]["code"] == "bad_request" and words in answer["error"]["message"], (body, answer)
    assert "not a repo" not in models(d)


def test_failures_are_in_the_model_list(d, base):
    """Not a diffusers model, and a repo the hub does not have: failed, the error listed."""
    for repo in (PLAIN, MISSING):
        assert call(d, "POST", "/models/download", {"repo": repo})[0] == 202
    plain = wait_download(d, "not-diffusers", ("failed", "downloaded"))
    assert plain["download"]["state"] == "failed" and not plain["available"]
    assert "not a diffusers model" in plain["download"]["error"] and "model_index.json" in plain["download"]["error"]
    assert plain["problem"] == f"download failed: {plain['download']['error']}"
    missing = wait_download(d, "nope", ("failed", "downloaded"))
    assert missing["download"]["state"] == "failed"
    assert "no such model repository" in missing["download"]["error"] and d.heartbeat and d.proc.poll() is None
    assert not (base / "models" / "nope").exists() and not (base / "models" / "not-diffusers").exists()


def test_a_hub_that_dies_mid_download_fails_then_a_retry_succeeds(d, hub, base):
    hub.die_during(RETRY, "text_encoder/model.safetensors", 20_000)
    assert call(d, "POST", "/models/download", {"repo": RETRY})[0] == 202
    entry = wait_download(d, "tiny-wan-retry", ("failed", "downloaded"), timeout=60)
    assert entry["download"]["state"] == "failed" and not entry["available"], entry
    assert "failed" in entry["download"]["error"] and "tiny-wan-retry" in entry["download"]["error"]
    assert not hub.running and not (base / "models" / "tiny-wan-retry").exists()

    hub.start()  # the same port: back online
    done = vidspool(d, "models", "download", RETRY, "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr, d.log())
    assert "downloading as model tiny-wan-retry" in done.stdout and "jobs may name model 'tiny-wan-retry'" in done.stdout
    entry = models(d)["tiny-wan-retry"]
    assert entry["available"] and entry["download"]["state"] == "downloaded" and entry["download"]["error"] is None

    refused = vidspool(d, "models", "download", "no-slash")
    assert refused.returncode == 1 and "ORG/NAME" in refused.stderr, (refused.stdout, refused.stderr)


def test_restart_offline_keeps_the_models_and_refuses_downloads(daemons, hub, base):
    daemons["d"].stop()
    d = daemons["d"] = Daemon(base / "spool", workers=["cpu"], **settings(base, hub, offline=True)).start()
    asked = len(hub.requests)
    listed = models(d)
    for name, repo in (("tiny-wan", WAN), ("tiny-wan-retry", RETRY)):
        assert listed[name]["available"] and listed[name]["repo"] == repo and listed[name]["download"] is None
    assert "nope" not in listed and "not-diffusers" not in listed  # failed downloads were this run's state

    status, answer = call(d, "POST", "/models/download", {"repo": WAN})
    assert status == 503 and answer["error"]["code"] == "offline", answer
    assert "HF_HUB_OFFLINE=1" in answer["error"]["message"] and "[registry] dir" in answer["error"]["message"]
    cli = vidspool(d, "models", "download", WAN)
    assert cli.returncode == 1 and "this host is offline" in cli.stderr, (cli.stdout, cli.stderr)

    generate(d, "tiny-wan-retry")
    assert len(hub.requests) == asked  # offline: the hub was never asked
