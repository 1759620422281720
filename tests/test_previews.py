"""Live previews (SPEC §10.2): a running job's outbox/<id>/preview.jpg, decoded from its
latents by a latent→RGB map fitted from the model's own VAE, with `preview` in its status,
an SSE `preview` event, and nothing left once the job has ended.

A watcher (inotify, through watchdog) sees every preview.jpg the worker renames into place
and decodes each at once; a second thread reads the file in a tight loop: neither may ever
meet a partial one.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from watchdog.events import FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from pipeline import diffusion, preview
from pipeline.context import JobContext
from tests.support import REPO, Daemon, drop_json, wait_for, wait_status

sys.path.insert(0, str(REPO / "scripts"))
from tiny_models import FAMILIES  # noqa: E402

STEPS = 8
NAME = "preview.jpg"


def decode(data: bytes) -> tuple[Image.Image, int]:
    """A complete JPEG (PIL fails on a cut one) and the step its comment names."""
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "JPEG"
    comment = image.info.get("comment", b"").decode()
    assert comment.startswith("vidspool preview step "), comment
    return image, int(comment.rsplit(" ", 1)[1])


class PreviewWatcher(FileSystemEventHandler):
    """Every preview.jpg renamed into place under a folder, read and decoded the moment it lands."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.renames = 0
        self.seen: list[tuple[int, tuple[int, int]]] = []  # (step, size) of each decoded file
        self.written_in_place: list[str] = []  # preview.jpg itself created or modified: never allowed
        self.errors: list[str] = []
        self._observer = InotifyObserver()
        self._observer.schedule(self, str(folder), recursive=True)

    def on_any_event(self, event):
        if Path(getattr(event, "dest_path", "") or "").name == NAME and event.event_type == "moved":
            self.renames += 1
            try:
                data = Path(event.dest_path).read_bytes()
            except FileNotFoundError:
                return  # the attempt ended and removed it already
            try:
                image, step = decode(data)
                self.seen.append((step, image.size))
            except Exception as exc:  # noqa: BLE001 - recorded, asserted in the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
        elif Path(event.src_path).name == NAME and event.event_type in ("created", "modified", "closed"):
            self.written_in_place.append(event.event_type)

    def __enter__(self):
        self._observer.start()
        return self

    def __exit__(self, *exc):
        self._observer.stop()
        self._observer.join()


def read_in_a_loop(path: Path, stop: threading.Event, found: dict) -> None:
    """Reads `path` as fast as it can; every read must decode whole."""
    while not stop.is_set():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        found["reads"] += 1
        try:
            decode(data)
        except Exception as exc:  # noqa: BLE001
            found["bad"].append(f"{type(exc).__name__}: {exc}")


def sse_previews(api: str, job_id: str, stop: threading.Event, events: list, connected: threading.Event,
                 streamed: list | None = None) -> None:
    """The `preview` events of GET /api/v1/events?job=ID (`connected` set once the stream
    answers; `streamed` gets every status document), read up to the job's final status."""
    with urllib.request.urlopen(f"{api}/api/v1/events?job={job_id}", timeout=60) as stream:
        connected.set()
        kind = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind == "preview":
                events.append(json.loads(line[len("data: "):]))
            elif line.startswith("data: ") and kind == "status" and streamed is not None:
                streamed.append(json.loads(line[len("data: "):]))
                if streamed[-1]["state"] in ("completed", "failed", "canceled"):
                    return
            elif line == "":
                kind = None
            if stop.is_set() and streamed is None:
                return


def wan_job(prompt: str = "a fox in snow", steps: int = STEPS) -> dict:
    t = FAMILIES["wan-t2v"]["test_size"]
    return {"kind": "text-to-video", "model": "wan-t2v", "params": {
        "prompt": prompt, "width": t["width"], "height": t["height"], "num_frames": t["num_frames"],
        "num_inference_steps": steps, "seed": 1}}


def preview_daemon(tiny_models, root: Path, every_steps: int) -> Daemon:
    return Daemon(root, workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(tiny_models),
                  VIDSPOOL_PREVIEW__EVERY_STEPS=str(every_steps),
                  VIDSPOOL_STATUS__PROGRESS_INTERVAL_SECONDS="0").start()  # every progress is written


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


# -- through a real daemon ----------------------------------------------------------------------
def test_wan_job_writes_a_decodable_preview_at_each_step(tiny_models, tmp_path):
    d = preview_daemon(tiny_models, tmp_path / "spool", every_steps=1)
    try:
        job_id = "fox"
        folder = d.root / "outbox" / job_id
        stop = threading.Event()
        reads = {"reads": 0, "bad": []}
        events: list[dict] = []
        connected = threading.Event()
        streamed: list[dict] = []  # every status write, from the event stream (a poll of the file may miss some)
        threads = [threading.Thread(target=read_in_a_loop, args=(folder / NAME, stop, reads), daemon=True),
                   threading.Thread(target=sse_previews, args=(d.api, job_id, stop, events, connected, streamed), daemon=True)]
        statuses: list[dict] = []
        served: list[tuple[int, str, bytes]] = []
        with PreviewWatcher(d.root / "outbox") as watcher:
            for t in threads:
                t.start()
            assert connected.wait(30), "the event stream did not answer"
            drop_json(d.root / "inbox", job_id, wan_job())
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                doc = json.loads((folder / "status.json").read_text()) if (folder / "status.json").exists() else None
                if doc:
                    statuses.append(doc)
                    if doc["state"] == "running" and doc.get("preview") and not served:
                        served.append(get(d.api + doc["preview"]["url"]))
                    if doc["state"] in ("completed", "failed", "canceled"):
                        break
                time.sleep(0.01)
            stop.set()
            threads[1].join(30)  # the stream up to the final status
        final = wait_status(d.root, job_id, daemon=d)
        assert final["state"] == "completed", (final["error"], d.log())

        # Every step wrote one, renamed into place, each complete when read.
        assert watcher.renames == STEPS, (watcher.renames, watcher.seen)
        assert watcher.errors == [] and reads["bad"] == [], (watcher.errors, reads["bad"])
        assert watcher.written_in_place == [], "preview.jpg must only ever be renamed into place"
        steps = [step for step, _ in watcher.seen]
        assert steps and steps == sorted(steps) and set(steps) <= set(range(1, STEPS + 1)), steps
        w, h = (FAMILIES["wan-t2v"]["test_size"][k] for k in ("width", "height"))
        assert {size for _, size in watcher.seen} == {(w, h)}, "the latent grid × the VAE's 8 px per cell"
        assert final["result"]["previews"]["written"] == STEPS, final["result"]
        assert final["result"]["previews"]["fit_seconds"] > 0, "the first job on this model fitted its map"

        # The status named each new one while running; the API served it; SSE sent events.
        shown = [s["preview"]["step"] for s in streamed if s["state"] == "running" and s.get("preview")]
        assert len(set(shown)) >= 2 and shown == sorted(shown), shown
        assert all(s["preview"]["url"] == f"/api/v1/jobs/{job_id}/{NAME}" for s in statuses if s.get("preview"))
        code, media_type, body = served[0]
        assert (code, media_type) == (200, "image/jpeg"), (code, body[:200])
        decode(body)
        assert len(events) >= 2 and [e["step"] for e in events] == sorted(e["step"] for e in events), events
        assert all(e["id"] == job_id and e["url"].endswith(NAME) for e in events)

        # Ended: no preview in the status, no file, nothing half-written left behind.
        assert final["preview"] is None
        assert not (folder / NAME).exists()
        assert not [n for n in map(lambda p: p.name, folder.iterdir()) if n.startswith(f".{NAME}")]
        assert get(f"{d.api}/api/v1/jobs/{job_id}/{NAME}")[0] == 404

        # A second job on the warm model reuses the fitted map.
        drop_json(d.root / "inbox", "again", wan_job("a fox at night", steps=2))
        again = wait_status(d.root, "again", daemon=d)
        assert again["state"] == "completed" and again["result"]["previews"] == {
            "written": 2, "seconds": again["result"]["previews"]["seconds"], "fit_seconds": 0.0}, again["result"]
    finally:
        d.stop()


def test_previews_off_write_none(tiny_models, tmp_path):
    d = preview_daemon(tiny_models, tmp_path / "spool", every_steps=0)
    try:
        with PreviewWatcher(d.root / "outbox") as watcher:
            drop_json(d.root / "inbox", "plain", wan_job(steps=3))
            final = wait_status(d.root, "plain", daemon=d)
        assert final["state"] == "completed", final["error"]
        assert watcher.renames == 0 and watcher.seen == []
        assert "previews" not in final["result"] and final["preview"] is None
        assert not any(n.startswith(".preview") for n in (p.name for p in (d.root / "outbox" / "plain").iterdir()))
    finally:
        d.stop()


def test_narrated_video_shows_its_rendered_frames(tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu"]).start()
    try:
        with PreviewWatcher(d.root / "outbox") as watcher:
            drop_json(d.root / "inbox", "story", {"kind": "narrated-video", "params": {
                "text": "The quick brown fox jumps over the lazy dog. Then it ran home!",
                "width": 640, "height": 360, "fps": 10, "captions": "none"}})
            final = wait_status(d.root, "story", timeout=120, daemon=d)
            wait_for(lambda: watcher.renames >= 1, timeout=5, what="a preview rename")
        assert final["state"] == "completed", final["error"]
        assert watcher.errors == [] and watcher.written_in_place == []
        assert watcher.seen, "the first rendered frame is shown at once"
        step, size = watcher.seen[0]
        assert step == 1 and size == (512, 288), "the frame, scaled to [preview] max_side (512)"
        assert final["result"]["previews"]["written"] == watcher.renames
        assert not (d.root / "outbox" / "story" / NAME).exists() and final["preview"] is None
    finally:
        d.stop()


# -- the map and every family's latents, in this process ---------------------------------------------
def test_fitted_map_approximates_a_vae_that_has_learned_colours():
    """Random weights give a VAE no colour code at all (the fit then finds only the mean:
    measured R² ≈ 0 for every tiny family), so a tiny Wan VAE first learns one: its decoder
    is trained briefly to draw tanh(A·z) per latent cell. The fit, from random latents and
    the VAE's own decode alone, must then predict fresh latents' pooled decode much better
    than their mean colour."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    pipe = types.SimpleNamespace(vae=vae)
    layout = preview.LAYOUTS["wan2.1"]
    code = torch.randn(3, 16) * 0.3
    grid = (2, 4, 4)
    optimizer = torch.optim.Adam(vae.decoder.parameters(), lr=1e-2)
    for _ in range(120):
        z = torch.randn((4, 16, *grid))
        decoded = layout.decode(pipe, z)
        pooled = torch.stack([preview.pool_to_grid(one, grid)[0] for one in decoded])
        loss = ((pooled - torch.einsum("oc,bcthw->bothw", code, z).tanh()) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    rgb_map = preview.fit_map(pipe, layout)
    assert rgb_map.weights.shape == (17, 3) and rgb_map.scale == 8
    z = torch.randn((1, 16, 3, 8, 8), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        truth, _ = preview.pool_to_grid((layout.decode(pipe, z)[0] + 1) / 2, (3, 8, 8))
    truth = truth.numpy()
    predicted = np.stack([np.tensordot(z[0, :, t].numpy(), rgb_map.weights[:-1], (0, 0)) + rgb_map.weights[-1]
                          for t in range(3)], 0).transpose(3, 0, 1, 2)  # (3, T, H, W)
    mean_error = ((truth - truth.mean(axis=(1, 2, 3), keepdims=True)) ** 2).mean()
    map_error = ((predicted - truth) ** 2).mean()
    assert map_error < 0.6 * mean_error, (map_error, mean_error)


@pytest.mark.parametrize("family, kind", [("wan-t2v", "text-to-video"), ("wan-i2v", "image-to-video"),
                                          ("ltx", "text-to-video"), ("svd", "image-to-video")])
def test_each_family_previews_its_latents(tiny_models, tmp_path, family, kind):
    """The real pipeline's step callback hands over its latents (packed ones for LTX, frames
    first for SVD); each becomes a preview of the latent grid × the VAE's own scale."""
    import diffusers

    from pipeline.kinds.video_generation import VideoParams

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(tiny_models / family), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    t = FAMILIES[family]["test_size"]
    params = VideoParams(prompt=None if family == "svd" else "a fox", width=t["width"], height=t["height"], num_frames=t["num_frames"],
                         num_inference_steps=2, seed=3)
    plan = diffusion.plan_call(type(pipe), params, kind, family)
    sent: list = []
    ctx = JobContext("j", {"kind": kind}, {}, tmp_path, "cpu", sent.append, threading.Event(),
                     preview={"path": str(tmp_path / NAME), "every_steps": 1, "max_side": 512})
    resident = types.SimpleNamespace(name=family, latent_rgb=None)
    live = preview.latent_preview(ctx.preview, pipe, resident, plan)
    assert live is not None and resident.latent_rgb is live.map
    inputs = {"image": Image.new("RGB", (t["width"], t["height"]), (200, 80, 40))} if kind == "image-to-video" else {}
    diffusion.denoise(ctx, pipe, plan, preview=live, **inputs)

    image, step = decode((tmp_path / NAME).read_bytes())
    assert step == 2 and image.size == (t["width"], t["height"]), (step, image.size)
    assert [m.preview_step for m in sent if getattr(m, "preview_step", None)] == [1, 2]
    assert ctx.preview.written == 2
    ctx.preview.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_pooling_maps_each_vae_time_layout():
    pixels = torch.arange(9, dtype=torch.float32).view(1, 9, 1, 1).expand(3, 9, 4, 4)
    causal, scale = preview.pool_to_grid(pixels, (3, 2, 2))  # LTX-like: 1 + 4·2 frames
    assert scale == 2 and causal[0, :, 0, 0].tolist() == [0.0, 2.5, 6.5]
    blocks, _ = preview.pool_to_grid(pixels[:, :8], (2, 2, 2))
    assert blocks[0, :, 0, 0].tolist() == [1.5, 5.5]
    with pytest.raises(ValueError):
        preview.pool_to_grid(pixels[:, :8], (3, 2, 2))
    assert preview.fit_size(1280, 720, 512) == (512, 288) and preview.fit_size(32, 32, 512) == (32, 32)


# -- the page ----------------------------------------------------------------------------------------
def test_page_shows_the_live_preview_and_pauses_the_queue(tiny_models, tmp_path):
    """In a real browser: a running job's row and details show its preview, replaced as the
    steps go on; the Pause button pauses the queue (the page says so) and Resume lifts it."""
    from tests.test_web_page import console_errors, make_browser, open_page, page_state, wait_js

    d = preview_daemon(tiny_models, tmp_path / "spool", every_steps=1)
    driver = make_browser()
    try:
        open_page(driver, d.api)
        job = wan_job(steps=400)
        job["params"].update(width=64, height=64, num_frames=9)
        drop_json(d.root / "inbox", "slow", job)
        row_img = "document.querySelector('tr[data-job-id=\"slow\"] img.thumb')"
        src = wait_js(driver, f"const img = {row_img}; return img && img.complete && img.naturalWidth > 0 && img.src;",
                      "the running row's live preview", 60)
        assert f"/api/v1/jobs/slow/{NAME}?step=" in src, src
        driver.find_element("css selector", 'tr[data-job-id="slow"] .details-button').click()
        first = int(wait_js(driver, "const img = document.querySelector('#details-preview');"
                                    "return img && img.complete && img.naturalWidth > 0 && img.dataset.step;",
                            "the details' live preview", 30))
        wait_js(driver, "const img = document.querySelector('#details-preview');"
                        "return img && Number(img.dataset.step) > arguments[0];", "a newer preview", 30, first)
        urllib.request.urlopen(urllib.request.Request(f"{d.api}/api/v1/jobs/slow", method="DELETE"), timeout=10)
        wait_status(d.root, "slow", daemon=d)
        wait_js(driver, "return !document.querySelector('#details-preview')", "the preview gone once the job ended", 30)
        driver.find_element("id", "details-close").click()

        toggle = driver.find_element("id", "pause-toggle")
        assert toggle.text == "Pause queue"
        toggle.click()
        text = wait_js(driver, "const p = document.querySelector('#paused'); return !p.hidden && p.textContent;",
                       "the paused pill", 15)
        assert text.startswith("paused"), text
        assert json.loads(get(f"{d.api}/api/v1/queue")[2])["paused"]["scope"] == "all"
        assert driver.find_element("id", "pause-toggle").text == "Resume"
        driver.find_element("id", "pause-toggle").click()
        wait_js(driver, "return document.querySelector('#paused').hidden", "the pill gone after Resume", 15)
        assert json.loads(get(f"{d.api}/api/v1/queue")[2])["paused"] is None
        # A preview asked for just as its job ended may meet the 404 of a removed file; nothing else.
        errors = [e for e in console_errors(driver) if not (f"/{NAME}?step=" in e and "404" in e)]
        assert errors == [], page_state(driver)
    finally:
        driver.quit()
        d.stop()
