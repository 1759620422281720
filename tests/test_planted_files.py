"""Someone who can write the spool plants job folders whose status.json names a file outside
the outbox (an absolute path, a `..` path), a result that is a symbolic link, an outbox
folder that is a link, a FIFO where a result, the live preview or status.json belongs. Every
route that serves a job's files, on the native API (with a read token) and on all five
personalities, answers its "not there" and never the secret's bytes, at once; a plain
planted result is served (the routes do reach the files), and a name that cannot be a plain
one (a CR LF in it) is not (nor answered 500); the result deletion removes only
files in the folder and leaves the targets of links alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests

from contract.status import new_status
from tests.support import Daemon, wait_for

READ = "planted-read-token-0123456789"
FULL = "planted-full-token-0123456789"
SECRET = b"TOP-SECRET-bytes-outside-the-spool\n"
GOOD = b"\x00\x00\x00\x18ftypmp42 a real planted result"
SEEDS = ("heygem", "story", "paksatalker", "visualizr", "wan")
KINDS = {"heygem": "talking-head", "story": "narrated-video", "paksatalker": "talking-head",
         "visualizr": "text-to-video", "wan": "text-to-video", "native": "slideshow"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    base = tmp_path_factory.mktemp("planted")
    root = base / "spool"
    secret = base / "secret.bin"
    secret.write_bytes(SECRET)
    d = Daemon(root, VIDSPOOL_API__TOKENS=json.dumps([{"token": READ, "scopes": ["read"]}, FULL]),
               VIDSPOOL_COMPAT=json.dumps({name: {"listen": "127.0.0.1:0"} for name in SEEDS})).start()
    wait_for(lambda: len(d.heartbeat.get("compat_urls") or {}) == len(SEEDS), what="personalities listening")
    yield d, secret
    d.stop()


def plant(root: Path, job_id: str, front: str, names: list[str], folder: Path | None = None) -> Path:
    """A completed job of `front` whose status lists `names` as results; its folder is
    outbox/<id>, or `folder` with outbox/<id> a link to it."""
    target = folder or root / "outbox" / job_id
    target.mkdir(parents=True)
    if folder is not None:
        os.symlink(folder, root / "outbox" / job_id)
    labels = {} if front == "native" else {"compat": front}
    doc = new_status(job_id, {"kind": KINDS[front], "labels": labels}, "completed",
                     started_at="2030-01-01T00:00:00Z", finished_at="2030-01-01T00:00:01Z",
                     result={"files": [{"name": n, "size": 10, "media_type": "video/mp4",
                                        "url": f"/api/v1/jobs/{job_id}/files/{n}"} for n in names]})
    (target / "status.json").write_text(json.dumps(doc))
    return target


def job_id(front: str, attack: str) -> str:
    return f"video_req_{front}-{attack}" if front == "visualizr" else f"{front}-{attack}"


def routes(d: Daemon, front: str, jid: str) -> list[tuple[str, dict]]:
    """Every URL that serves the job's video (or a file of it), with the headers to send."""
    if front == "native":
        read = {"Authorization": f"Bearer {READ}"}
        return [(f"{d.api}/api/v1/jobs/{jid}/download", read),
                (f"{d.api}/api/v1/jobs/{jid}/files/video.mp4", read)]
    base = d.heartbeat["compat_urls"][front]
    return {
        "heygem": [(f"{base}/api/download/{jid}", {}), (f"{base}/outputs/final_{jid}.mp4", {})],
        "story": [(f"{base}/api/v1/download/{jid}", {})],
        "paksatalker": [(f"{base}/api/v1/download/{jid}.mp4", {})],
        "visualizr": [(f"{base}/assets/video/video_{jid.removeprefix('video_req_')}.mp4",
                       {"Authorization": f"Bearer {READ}"})],
        "wan": [(f"{base}/outputs/text2video_{jid}.mp4", {})],
    }[front]


def fetch(url: str, headers: dict) -> tuple[int, bytes, float]:
    started = time.monotonic()
    r = requests.get(url, headers=headers, timeout=10)
    return r.status_code, r.content, time.monotonic() - started


FRONTS = ("native", *SEEDS)
ATTACKS = ("absolute", "dotdot", "link", "folder", "fifo", "sublink", "newline")


@pytest.fixture(scope="module")
def attacks(planted):
    """Per front, a job for each attack (and a plain planted result as a control)."""
    d, secret = planted
    root = d.root
    made: dict[str, dict[str, str]] = {}
    for front in FRONTS:
        ids = {a: job_id(front, a) for a in ("good", *ATTACKS)}
        made[front] = ids
        (plant(root, ids["good"], front, ["video.mp4"]) / "video.mp4").write_bytes(GOOD)
        plant(root, ids["absolute"], front, [str(secret)])
        outbox = root / "outbox" / ids["dotdot"]
        plant(root, ids["dotdot"], front, [os.path.relpath(secret, outbox)])
        os.symlink(secret, plant(root, ids["link"], front, ["video.mp4"]) / "video.mp4")
        elsewhere = plant(root, ids["folder"], front, ["video.mp4"], folder=root.parent / f"elsewhere-{front}")
        (elsewhere / "video.mp4").write_bytes(SECRET)
        os.mkfifo(plant(root, ids["fifo"], front, ["video.mp4"]) / "video.mp4")
        sub = plant(root, ids["sublink"], front, ["sub/secret.bin"])
        os.symlink(secret.parent, sub / "sub")
        (plant(root, ids["newline"], front, ["video\r\n.mp4"]) / "video\r\n.mp4").write_bytes(SECRET)  # no header
    return made


@pytest.mark.parametrize("front", FRONTS)
def test_every_route_serves_a_plain_planted_result(planted, attacks, front):
    d, _ = planted
    for url, headers in routes(d, front, attacks[front]["good"]):
        status, body, _ = fetch(url, headers)
        assert status == 200 and body == GOOD, (url, status, body[:200])


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("front", FRONTS)
def test_a_planted_result_outside_the_folder_or_behind_a_link_is_never_served(planted, attacks, front, attack):
    d, _ = planted
    for url, headers in routes(d, front, attacks[front][attack]):
        status, body, seconds = fetch(url, headers)
        assert SECRET not in body, url
        assert status == (500 if front == "story" else 404), (url, status, body[:300])  # Story's own "not found"
        assert seconds < 5, (url, seconds)


def test_native_status_preview_and_file_routes_take_no_link_and_never_block(planted, attacks):
    d, secret = planted
    read = {"Authorization": f"Bearer {READ}"}
    root = d.root
    # status.json a link to a secret JSON file, or a FIFO; preview.jpg a link, or a FIFO
    (root.parent / "secret.json").write_text(json.dumps({"id": "x", "state": "completed", "secret": SECRET.decode()}))
    for jid, how in (("status-link", "link"), ("status-fifo", "fifo")):
        folder = root / "outbox" / jid
        folder.mkdir()
        if how == "link":
            os.symlink(root.parent / "secret.json", folder / "status.json")
        else:
            os.mkfifo(folder / "status.json")
        status, body, seconds = fetch(f"{d.api}/api/v1/jobs/{jid}", read)
        assert status == 404 and b"TOP-SECRET" not in body and seconds < 5, (jid, status, body[:300])
    good = attacks["native"]["good"]
    os.symlink(secret, root / "outbox" / good / "preview.jpg")
    status, body, seconds = fetch(f"{d.api}/api/v1/jobs/{good}/preview.jpg", read)
    assert status == 404 and SECRET not in body and seconds < 5
    os.unlink(root / "outbox" / good / "preview.jpg")
    os.mkfifo(root / "outbox" / good / "preview.jpg")
    status, body, seconds = fetch(f"{d.api}/api/v1/jobs/{good}/preview.jpg", read)
    assert status == 404 and seconds < 5
    os.unlink(root / "outbox" / good / "preview.jpg")
    (root / "outbox" / good / "preview.jpg").write_bytes(b"\xff\xd8\xff planted jpeg")
    status, body, _ = fetch(f"{d.api}/api/v1/jobs/{good}/preview.jpg", read)
    assert status == 200 and body == b"\xff\xd8\xff planted jpeg"  # a plain preview is served
    # a Range request of a result is served from the opened file
    r = requests.get(f"{d.api}/api/v1/jobs/{good}/download", headers={**read, "Range": "bytes=4-11"}, timeout=10)
    assert r.status_code == 206 and r.content == GOOD[4:12]
    assert d.proc.poll() is None and time.time() - os.stat(root / "hosts" / "test-host.json").st_mtime < 3


def test_deleting_planted_results_removes_nothing_outside_the_folder(planted, attacks):
    d, secret = planted
    full = {"Authorization": f"Bearer {FULL}"}
    for attack in ("absolute", "dotdot", "link", "folder", "sublink"):
        jid = attacks["native"][attack]
        r = requests.delete(f"{d.api}/api/v1/jobs/{jid}/results", headers=full, timeout=10)
        assert r.status_code in (200, 404), (attack, r.status_code, r.text)
        assert secret.read_bytes() == SECRET, attack
    assert (d.root.parent / "elsewhere-native" / "video.mp4").read_bytes() == SECRET  # a linked folder is not entered
    assert not os.path.lexists(d.root / "outbox" / attacks["native"]["link"] / "video.mp4")  # the link itself went
