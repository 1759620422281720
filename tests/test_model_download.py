"""Model download from the Hugging Face hub (daemon/view/downloads.py): POST /api/v1/models/download,
Wan's POST /api/v1/models/download and `vidspool models download` against a real hub on
loopback (tests/hubserver.py, HF_ENDPOINT) serving the tiny Wan text-to-video model of
scripts/tiny_models.py in the hub's file layout.

A real daemon (HF_HUB_OFFLINE=0 for it alone, its hub cache in a temp dir, no [api] tokens,
`[registry] download_allow = ["vidspool-*/*"]`, the Wan personality on) downloads in the
background: the model list shows the bytes while a file is held back, then the model is
registered under its full repo id (a link in [registry] dir to the snapshot in the hub cache)
and a text-to-video job naming the id every list shows makes an MP4. A repo outside the
allowed patterns is refused anonymously on both fronts (403 in each one's shape) and
downloaded by the operator's CLI, which presents the operator key only the daemon's user can
read (`nobody` cannot; without it the CLI is refused). A look-alike downloaded first never takes the name
the operator's config gives the real repo. Caps: two downloads at once, bytes per download,
the free disk (a repo the hub says is a pebibyte). Failed downloads (no model_index.json, a
repo the hub lacks, a hub that dies mid-download) are listed with their errors, only the
newest three, and for 3 s on the daemon with tokens, where a token of the submit scope
downloads on both fronts and a read token is refused. Restarted offline, the daemon still
lists and runs the models, never asks the hub, and refuses downloads with the offline error.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.hubserver import HubServer
from tests.support import REPO, Daemon, holds, wait_for, wait_status

sys.path.insert(0, str(REPO / "scripts"))
from tiny_models import FAMILIES  # noqa: E402

WAN = "vidspool-test/tiny-wan"
REAL = "Wan-AI/tiny-wan"  # the operator's, not in download_allow
EVIL = "vidspool-evil/tiny-wan"  # a look-alike anyone may download: its weights are garbage
SHORT = "Wan-AI/tiny-wan-short"  # [models.wan-short] repo
RETRY = "vidspool-test/tiny-wan-retry"
PLAIN = "vidspool-test/not-diffusers"
MISSING = "vidspool-test/nope"
HELD = "transformer/diffusion_pytorch_model.safetensors"
PLACES = ["vidspool-test/place-1", "vidspool-test/place-2", "vidspool-test/place-3"]
BIG, HUGE = "vidspool-test/big", "vidspool-test/huge"
BY_TOKEN = ["vidspool-token/native", "vidspool-token/wan", "vidspool-token/cli"]
READ_TOKEN, SUBMIT_TOKEN = "read-token-0123456789", "submit-token-0123456789"
OVER_CAP = 60_000  # max_download_bytes: the tiny model and this many bytes more
KEPT = 3  # failed_downloads_kept


def repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def hub(tiny_models, tmp_path_factory):
    wan = tiny_models / "wan-t2v"
    plain = tmp_path_factory.mktemp("plain-repo")
    (plain / "config.json").write_text('{"model_type": "bert"}')
    (plain / "model.safetensors").write_bytes(os.urandom(4096))
    evil = tmp_path_factory.mktemp("evil-repo") / "wan"
    shutil.copytree(wan, evil)
    (evil / HELD).write_bytes(os.urandom((wan / HELD).stat().st_size))
    big = tmp_path_factory.mktemp("big-repo") / "wan"
    shutil.copytree(wan, big)
    (big / "extra.safetensors").write_bytes(os.urandom(2 * OVER_CAP))
    repos = {repo: wan for repo in (WAN, REAL, SHORT, RETRY, HUGE, *PLACES, *BY_TOKEN)}
    server = HubServer({**repos, EVIL: evil, BIG: big, PLAIN: plain}).start()
    server.claim_size(HUGE, HELD, 2**50)  # a pebibyte: no disk here holds it
    yield server
    server.stop()


@pytest.fixture(scope="module")
def base():
    """The spool, hub cache and registry, in a folder every user may pass through: only the
    key file's own mode keeps `nobody` from it."""
    folder = Path(tempfile.mkdtemp(prefix="vidspool-download-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(base) -> Path:
    return base / "models"


def settings(base: Path, registry: Path, hub: HubServer, tiny_models: Path, offline: bool, **more: str) -> dict[str, str]:
    return {"VIDSPOOL_REGISTRY__DIR": str(registry), "HF_HOME": str(base / "hf"), "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DOWNLOAD_TIMEOUT": "30", "VIDSPOOL_COMPAT__WAN__LISTEN": "127.0.0.1:0",
            "VIDSPOOL_MODELS": json.dumps({"wan-short": {"repo": SHORT}}),
            "VIDSPOOL_REGISTRY__DOWNLOAD_ALLOW": json.dumps(["vidspool-*/*"]),
            "VIDSPOOL_REGISTRY__MAX_DOWNLOAD_BYTES": str(repo_bytes(tiny_models / "wan-t2v") + OVER_CAP),
            "VIDSPOOL_REGISTRY__FAILED_DOWNLOADS_KEPT": str(KEPT), **more}


@pytest.fixture(scope="module")
def daemons(base, registry, hub, tiny_models):
    """The online daemon first; later tests replace it (tokens, then offline)."""
    running = {"d": Daemon(base / "spool", workers=["cpu"], **settings(base, registry, hub, tiny_models, False)).start()}
    yield running
    running["d"].stop()


@pytest.fixture
def d(daemons) -> Daemon:
    return daemons["d"]


def call(url: str, method: str, body=None, token: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def native(d: Daemon, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    return call(d.api + "/api/v1" + path, method, body, token)


def download(d: Daemon, repo, token: str | None = None, **more) -> tuple[int, dict]:
    return native(d, "POST", "/models/download", {"repo": repo, **more}, token)


def wan_download(d: Daemon, repo: str, token: str | None = None) -> tuple[int, dict]:
    return call(d.heartbeat["compat_urls"]["wan"] + "/api/v1/models/download", "POST", {"model_id": repo}, token)


def models(d: Daemon, token: str | None = None) -> dict[str, dict]:
    status, body = native(d, "GET", "/models", token=token)
    assert status == 200, body
    return {m["name"]: m for m in body["models"]}


def wan_models(d: Daemon) -> dict[str, dict]:
    status, body = call(d.heartbeat["compat_urls"]["wan"] + "/api/v1/models", "GET")
    assert status == 200, body
    return {m["id"]: m for m in body["models"]}


def wait_download(d: Daemon, name: str, states: tuple[str, ...] = ("downloaded", "failed"), timeout: float = 60,
                  token: str | None = None) -> dict:
    wait_for(lambda: (models(d, token).get(name, {}).get("download") or {}).get("state") in states, timeout,
             f"{name} to be {states}: {models(d, token).get(name)}\n{d.log()}")
    return models(d, token)[name]


def snapshot(base: Path, hub: HubServer, repo: str) -> Path:
    return base / "hf" / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / hub.repos[repo].sha


def shown(hub: HubServer, repo: str) -> str:
    """A snapshot folder as the answers show it: relative to the hub cache, no host path."""
    return f"hub/models--{repo.replace('/', '--')}/snapshots/{hub.repos[repo].sha}"


def asked(hub: HubServer, repo: str) -> list[str]:
    return [p for _, p in hub.requests if p.startswith((f"/{repo}/", f"/api/models/{repo}"))]


def vidspool(d: Daemon, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI with the daemon's config."""
    settings = {**d.settings, "VIDSPOOL_API__HOST": "127.0.0.1", "VIDSPOOL_API__PORT": d.api.rsplit(":", 1)[1], **env}
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("VIDSPOOL_")}, **settings,
                "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=120)


def generate(d: Daemon, model: str, completes: bool = True) -> dict:
    """A text-to-video job naming `model`, through the API; the MP4 checked with ffprobe."""
    t = FAMILIES["wan-t2v"]["test_size"]
    params = {"prompt": "a fox in snow", "width": t["width"], "height": t["height"], "num_frames": t["num_frames"],
              "num_inference_steps": t["steps"], "fps": 8}
    status, body = native(d, "POST", "/jobs", {"kind": "text-to-video", "model": model, "params": params})
    assert status == 202, body
    doc = wait_status(d.root, body["id"], timeout=120, daemon=d)
    if not completes:
        return doc
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


# -- the tests, in order: they share one spool, hub cache and registry ------------------------
def test_download_shows_progress_registers_under_the_repo_id_and_runs_a_job(d, hub, base, registry, tiny_models):
    """Anonymous, allowed by download_allow; every list shows the repo id, and a job naming it runs."""
    release = hub.hold(WAN, HELD)
    status, started = download(d, WAN)
    assert status == 202, started
    assert (started["repo"], started["revision"], started["name"], started["state"]) == (WAN, "main", WAN, "downloading")
    again = download(d, WAN, revision="main")
    assert again[0] == 202 and again[1]["started_at"] == started["started_at"]  # the same download
    assert download(d, WAN, revision="v2")[0] == 409  # not while it runs

    total = repo_bytes(tiny_models / "wan-t2v")
    held = (tiny_models / "wan-t2v" / HELD).stat().st_size
    # Every file but the held one arrives; the list shows it, not yet available.
    wait_for(lambda: (models(d)[WAN]["download"] or {}).get("bytes_done") == total - held, 30,
             f"progress: {models(d).get(WAN)}")
    entry = models(d)[WAN]
    assert entry["download"]["state"] == "downloading" and entry["download"]["bytes_total"] == total
    assert entry["available"] is False and entry["problem"] == f"downloading from the hub: {total - held} of {total} bytes"
    assert entry["repo"] == WAN
    release.set()

    entry = wait_download(d, WAN)
    assert entry["download"]["state"] == "downloaded", entry
    assert entry["available"] and entry["download"]["bytes_done"] == total and entry["download"]["error"] is None
    assert entry["download"]["finished_at"] >= entry["download"]["started_at"] == started["started_at"]
    folder = snapshot(base, hub, WAN)
    assert entry["folder"] == entry["download"]["folder"] == entry["path"] == shown(hub, WAN)  # no host path in an answer
    assert entry["repo"] == WAN and "text-to-video" in entry["kinds"]
    link = registry / "vidspool-test--tiny-wan"
    assert link.is_symlink() and link.resolve() == folder  # registered, stored once: in the hub cache
    assert not (registry / "tiny-wan").exists()  # the last part alone is no name
    assert (folder / "model_index.json").read_bytes() == (tiny_models / "wan-t2v" / "model_index.json").read_bytes()
    fetched = {p for m, p in hub.requests if m == "GET" and "/resolve/" in p and p.startswith(f"/{WAN}/")}
    # The commit measured is the commit fetched; refs/main names it for a [models.X] repo entry.
    assert fetched == {f"/{WAN}/resolve/{hub.repos[WAN].sha}/{f}" for f in hub.repos[WAN].files}
    assert (folder.parent.parent / "refs" / "main").read_text() == hub.repos[WAN].sha

    wan_listed = wan_models(d)[WAN]
    assert (wan_listed["name"], wan_listed["repo"], wan_listed["downloaded"]) == (WAN, WAN, True), wan_listed
    listed = vidspool(d, "models", "list")
    assert f"\n{WAN} " in f"\n{listed.stdout}", (listed.stdout, listed.stderr)
    generate(d, WAN)


def test_downloads_not_allowed_are_refused_anonymously_on_both_fronts(d, hub):
    """No token, no allowed pattern: 403 in each front's shape, before the hub is asked."""
    status, body = download(d, REAL)
    assert status == 403 and body["error"]["code"] == "forbidden", body
    assert "submit scope" in body["error"]["message"] and "download_allow" in body["error"]["message"]
    status, body = wan_download(d, REAL)
    assert status == 403 and set(body) == {"error"} and "download_allow" in body["error"], body
    for token in ("not-the-operator-key", "x" * 43):
        assert download(d, REAL, token)[0] == 403 and wan_download(d, REAL, token)[0] == 403
    assert download(d, "not a repo")[0] == 400  # a malformed one says so first
    assert asked(hub, REAL) == [] and all((m["download"] or {}).get("repo") != REAL for m in models(d).values())


def test_a_look_alike_downloaded_first_cannot_take_the_name(d, hub, base, registry):
    """Anyone downloads `vidspool-evil/tiny-wan` (download_allow is loose); the operator's CLI
    (no tokens configured: the operator key) then downloads `Wan-AI/tiny-wan`. Each is its
    full id; `tiny-wan` is no model; a short name is the operator's config alone."""
    status, body = wan_download(d, EVIL)
    assert status == 200 and (body["model_id"], body["name"], body["state"]) == (EVIL, EVIL, "downloading"), body
    assert wait_download(d, EVIL)["download"]["state"] == "downloaded"

    done = vidspool(d, "models", "download", REAL, "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr, d.log())
    assert f"downloading as model {REAL}" in done.stdout and f"jobs may name model '{REAL}'" in done.stdout
    listed = models(d)
    assert listed[REAL]["available"] and listed[REAL]["folder"] == shown(hub, REAL)
    assert listed[EVIL]["available"] and listed[EVIL]["folder"] == shown(hub, EVIL)
    assert "tiny-wan" not in listed and {REAL, EVIL} <= set(wan_models(d))
    assert (registry / "Wan-AI--tiny-wan").resolve() == snapshot(base, hub, REAL)
    generate(d, REAL)
    short = generate(d, "tiny-wan", completes=False)
    assert short["state"] == "failed" and short["error"]["code"] == "model_not_found", short["error"]
    evil = generate(d, EVIL, completes=False)  # its weights are garbage: it never ran for REAL
    assert evil["state"] == "failed" and evil["error"]["code"] == "model_load_failed", evil["error"]

    # [models.wan-short] repo = SHORT: downloaded, it is served as wan-short (no link, no other name).
    done = vidspool(d, "models", "download", SHORT, "--wait")
    assert done.returncode == 0 and "jobs may name model 'wan-short'" in done.stdout, (done.stdout, done.stderr)
    entry = models(d)["wan-short"]
    assert entry["available"] and entry["folder"] == shown(hub, SHORT) and SHORT not in models(d)
    assert (wan_models(d)["wan-short"]["repo"], wan_models(d)["wan-short"]["downloaded"]) == (SHORT, True)
    assert not (registry / "Wan-AI--tiny-wan-short").exists()


def test_the_operator_key_is_for_the_daemons_user_alone(d, hub, registry):
    key = registry / f".operator-{d.host}.key"
    mode = key.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.geteuid() and stat.S_ISREG(mode.st_mode)
    if os.geteuid() == 0:  # another user on the host sees the file, and cannot read it
        nobody = {"user": 65534, "group": 65534, "extra_groups": []}
        assert subprocess.run(["test", "-f", str(key)], **nobody).returncode == 0
        other = subprocess.run(["cat", str(key)], capture_output=True, text=True, **nobody)
        assert other.returncode == 1 and "Permission denied" in other.stderr and not other.stdout, other
    # Without the key the CLI is anyone: refused.
    repo = "private-org/other-model"
    aside = key.with_name("aside")
    key.rename(aside)
    try:
        without = vidspool(d, "models", "download", repo)
        assert without.returncode == 1 and "needs an [api] token with the submit scope" in without.stderr, without.stderr
    finally:
        aside.rename(key)
    assert asked(hub, repo) == []


def test_concurrent_downloads_are_capped(d, hub):
    releases = [hub.hold(repo, HELD) for repo in PLACES[:2]]
    try:
        for repo in PLACES[:2]:
            assert download(d, repo)[0] == 202
        status, body = download(d, PLACES[2])
        assert status == 429 and body["error"]["code"] == "too_many_downloads", body
        assert "[registry] max_concurrent_downloads (2)" in body["error"]["message"]
        assert wan_download(d, PLACES[2])[0] == 429 and asked(hub, PLACES[2]) == []
    finally:
        for release in releases:
            release.set()
    for repo in PLACES[:2]:
        assert wait_download(d, repo)["download"]["state"] == "downloaded"
    assert download(d, PLACES[2])[0] == 202
    assert wait_download(d, PLACES[2])["download"]["state"] == "downloaded"


def test_bytes_and_free_disk_are_checked_before_starting(d, hub, tiny_models):
    big = repo_bytes(tiny_models / "wan-t2v") + 2 * OVER_CAP
    status, body = download(d, BIG)
    assert status == 413 and body["error"]["code"] == "too_large", body
    limit = repo_bytes(tiny_models / "wan-t2v") + OVER_CAP
    assert f"{BIG} is {big} bytes, over [registry] max_download_bytes ({limit})" in body["error"]["message"]
    status, body = wan_download(d, HUGE)
    assert status == 507 and "needs" in body["error"] and "free" in body["error"], body
    need = repo_bytes(tiny_models / "wan-t2v") - (tiny_models / "wan-t2v" / HELD).stat().st_size + 2**50
    assert f"{HUGE} needs {need} bytes more" in body["error"]
    listed = models(d)
    assert BIG not in listed and HUGE not in listed  # refused, not failed
    for repo in (BIG, HUGE):  # only the file list was read
        assert asked(hub, repo) and all(p.startswith("/api/models/") for p in asked(hub, repo)), asked(hub, repo)


def test_bad_requests_are_refused_at_once(d):
    for body, words in [({"repo": "not a repo"}, "ORG/NAME"), ({"repo": "org--x/y"}, "ORG/NAME"),
                        ({"repo": 7}, "ORG/NAME"), ({"repo": WAN, "revision": "../../etc"}, "revision"),
                        ({"repo": WAN + "\n"}, "ORG/NAME"), ({"repo": WAN, "revision": "main\n"}, "revision"),
                        ({"repo": WAN, "colour": "red"}, "colour"), ({}, "repo is required"),
                        (["x"], "JSON object")]:
        status, answer = native(d, "POST", "/models/download", body)
        assert status == 400 and answer["error"]["code"] == "bad_request" and words in answer["error"]["message"], (body, answer)
    assert "not a repo" not in models(d)


def test_failures_are_in_the_model_list(d, registry):
    """Not a diffusers model, and a repo the hub does not have: failed, the error listed."""
    for repo in (PLAIN, MISSING):
        status, body = download(d, repo)
        assert status == 202 and body["state"] == "failed", body
    plain = wait_download(d, PLAIN)
    assert plain["download"]["state"] == "failed" and not plain["available"]
    assert "not a diffusers model" in plain["download"]["error"] and "model_index.json" in plain["download"]["error"]
    assert plain["problem"] == f"download failed: {plain['download']['error']}"
    missing = wait_download(d, MISSING)
    assert missing["download"]["state"] == "failed"
    assert "no such model repository" in missing["download"]["error"] and d.heartbeat and d.proc.poll() is None
    assert not (registry / "vidspool-test--nope").exists() and not (registry / "vidspool-test--not-diffusers").exists()
    status, body = wan_download(d, MISSING)
    assert status == 200 and body["state"] == "failed" and "no such model repository" in body["message"], body


def test_only_the_newest_failures_stay_listed(d):
    bogus = [f"vidspool-test/bogus-{n}" for n in range(8)]
    for repo in bogus:
        assert download(d, repo)[1]["state"] == "failed"
    failed = [n for n, m in models(d).items() if (m["download"] or {}).get("state") == "failed"]
    assert sorted(failed) == sorted(bogus[-KEPT:]), failed
    assert len([m for m in wan_models(d).values() if (m.get("download") or {}).get("state") == "failed"]) == KEPT


def test_a_hub_that_dies_mid_download_fails_then_a_retry_succeeds(d, hub, registry):
    hub.die_during(RETRY, "text_encoder/model.safetensors", 20_000)
    assert download(d, RETRY)[0] == 202
    entry = wait_download(d, RETRY, timeout=60)
    assert entry["download"]["state"] == "failed" and not entry["available"], entry
    assert "failed" in entry["download"]["error"] and "tiny-wan-retry" in entry["download"]["error"]
    assert not hub.running and not (registry / "vidspool-test--tiny-wan-retry").exists()

    hub.start()  # the same port: back online
    done = vidspool(d, "models", "download", RETRY, "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr, d.log())
    assert f"downloading as model {RETRY}" in done.stdout and f"jobs may name model '{RETRY}'" in done.stdout
    entry = models(d)[RETRY]
    assert entry["available"] and entry["download"]["state"] == "downloaded" and entry["download"]["error"] is None

    refused = vidspool(d, "models", "download", "no-slash")
    assert refused.returncode == 1 and "ORG/NAME" in refused.stderr, (refused.stdout, refused.stderr)


def test_with_tokens_the_submit_scope_downloads_on_both_fronts(daemons, hub, base, registry, tiny_models):
    """No download_allow; [api] tokens: a read one and a submit one. Failed downloads stay 3 s."""
    daemons["d"].stop()
    tokens = [{"token": READ_TOKEN, "scopes": ["read"]}, {"token": SUBMIT_TOKEN, "scopes": ["read", "submit"]}]
    d = daemons["d"] = Daemon(base / "spool", workers=["cpu"], **settings(
        base, registry, hub, tiny_models, False, VIDSPOOL_API__TOKENS=json.dumps(tokens),
        VIDSPOOL_REGISTRY__DOWNLOAD_ALLOW="[]", VIDSPOOL_REGISTRY__FAILED_DOWNLOADS_KEEP_SECONDS="3")).start()
    native_repo, wan_repo, cli_repo = BY_TOKEN
    assert download(d, native_repo)[0] == 401
    status, body = download(d, native_repo, READ_TOKEN)
    assert status == 403 and body["error"]["code"] == "forbidden" and "'submit' scope" in body["error"]["message"]
    status, body = download(d, native_repo, SUBMIT_TOKEN)
    assert status == 202 and body["name"] == native_repo, body
    # Wan is open (no require_tokens): a bearer of the submit scope is what lets one download there.
    for token in (None, READ_TOKEN):
        status, body = wan_download(d, wan_repo, token)
        assert status == 403 and "submit scope" in body["error"], body
    status, body = wan_download(d, wan_repo, SUBMIT_TOKEN)
    assert status == 200 and body["name"] == wan_repo, body
    done = vidspool(d, "models", "download", cli_repo, "--wait", VIDSPOOL_API__TOKENS=json.dumps(tokens))
    assert done.returncode == 0, (done.stdout, done.stderr)
    for repo in BY_TOKEN:
        assert wait_download(d, repo, token=READ_TOKEN)["available"]

    status, body = download(d, MISSING, SUBMIT_TOKEN)
    assert body["state"] == "failed" and models(d, READ_TOKEN)[MISSING]["download"]["state"] == "failed"
    wait_for(lambda: MISSING not in models(d, READ_TOKEN), 10, "the failed download to expire")


def test_restart_offline_keeps_the_models_and_refuses_downloads(daemons, hub, base, registry, tiny_models):
    daemons["d"].stop()
    d = daemons["d"] = Daemon(base / "spool", workers=["cpu"], **settings(
        base, registry, hub, tiny_models, True)).start()
    before = len(hub.requests)
    listed = models(d)
    for name in (WAN, RETRY, REAL, "wan-short"):
        assert listed[name]["available"] and listed[name]["download"] is None, listed[name]
    assert listed[RETRY]["repo"] == RETRY and listed["wan-short"]["repo"] == SHORT
    assert MISSING not in listed and PLAIN not in listed  # failed downloads were this run's state
    shown = wan_models(d)  # Wan's ids are the names jobs give, downloads forgotten or not
    assert set(shown) <= set(listed) and {WAN, REAL, "wan-short"} <= set(shown), shown

    status, answer = download(d, WAN)
    assert status == 503 and answer["error"]["code"] == "offline", answer
    assert "HF_HUB_OFFLINE=1" in answer["error"]["message"] and "[registry] dir" in answer["error"]["message"]
    cli = vidspool(d, "models", "download", WAN)
    assert cli.returncode == 1 and "this host is offline" in cli.stderr, (cli.stdout, cli.stderr)

    generate(d, RETRY)
    holds(lambda: len(hub.requests) == before, 0.5, "offline: the hub is never asked")
