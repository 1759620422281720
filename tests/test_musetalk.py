"""musetalk: a random-weight MuseTalk 1.5 folder, built here in the published layout, loaded
and run on the CPU.

The folder comes from scripts/tiny_musetalk.py (narrow UNet, VAE and Whisper, the real
geometry: 256 px crops, 32x32x4 latents, 80 mel bins, 50 encoder steps a second). Its
weights are random, so the mouths it draws are noise: the tests check counts, shapes,
silence past the speech, determinism, and what a broken folder says.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from contract.errors import ErrorCode, JobError
from contract import lipsync_folders as layout
from pipeline.lipsync.musetalk import WINDOW_STEPS, load_musetalk
from tests.support import REPO, Daemon, drop_folder, wait_status

_spec = importlib.util.spec_from_file_location("tiny_musetalk", REPO / "scripts" / "tiny_musetalk.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

RATE = 16_000
FPS = 25


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("musetalk") / "tiny")


@pytest.fixture(scope="session")
def model(folder):
    return load_musetalk(folder, "cpu")


@pytest.fixture
def copy(folder, tmp_path):
    """A copy of the tiny folder to break."""
    return Path(shutil.copytree(folder, tmp_path / "broken"))


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise-modulated tones: not speech, but audio the encoder does not see as silence."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
            0.05 * rng.standard_normal(t.size)).astype(np.float32)


def crops(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8)


def test_the_built_folder_is_a_musetalk_folder_and_a_second_build_reuses_it(folder):
    assert layout.backend_of(folder) == "musetalk"
    assert layout.check_folder("tiny", folder, None) == "musetalk"
    stamp = (folder / tiny.STAMP).stat().st_mtime_ns
    assert tiny.build(folder) == folder
    assert (folder / tiny.STAMP).stat().st_mtime_ns == stamp
    unet = json.loads((folder / "musetalkV15" / "musetalk.json").read_text())
    whisper = json.loads((folder / "whisper" / "config.json").read_text())
    assert unet["in_channels"] == 8 and unet["out_channels"] == 4
    assert whisper["d_model"] == unet["cross_attention_dim"]


def test_loads_as_a_lipsync_backend(model):
    import torch

    assert model.backend == "musetalk" and model.face_size == 256
    assert set(model.components) == {"unet", "vae", "whisper"}
    assert all(isinstance(m, torch.nn.Module) for m in model.components.values())
    assert model.dtype == torch.float32  # float16 is for CUDA
    assert model.scaling_factor == pytest.approx(0.18215)


@pytest.mark.parametrize("seconds", [0.5, 2.6])
def test_one_window_per_frame_however_long_the_speech(model, seconds):
    frames = 2 * FPS  # 2 s of video
    windows = model.audio_features(speech(seconds), FPS, frames)
    assert len(windows) == frames
    tokens = WINDOW_STEPS * model.layers  # 10 encoder steps of every layer
    assert all(windows[i].shape == (tokens, model.d_model) for i in range(frames))
    assert windows[0:8].shape == (8, tokens, model.d_model)
    heard = [bool(np.abs(windows[i]).max() > 0) for i in range(frames)]
    assert heard[0]
    # Past the speech (plus the window's 80 ms look-back) a frame hears silence.
    assert heard[-1] == (seconds > 2)
    if seconds < 2:
        last_heard = max(i for i, h in enumerate(heard) if h)
        assert last_heard == int(seconds * FPS) + 2


def test_speech_longer_than_one_whisper_window(model):
    frames = int(31.5 * FPS)  # two 30 s Whisper chunks
    windows = model.audio_features(speech(31.5), FPS, frames)
    assert len(windows) == frames
    assert np.abs(windows[frames - 3]).max() > 0


def test_fractional_frame_rates_no_speech_and_broken_speech(model):
    assert len(model.audio_features(speech(1.0), 29.97, 30)) == 30
    silent = model.audio_features(np.zeros(0, np.float32), FPS, 5)
    assert len(silent) == 5 and not np.abs(silent[0:5]).any()
    broken = speech(0.5)
    broken[100] = np.nan
    with pytest.raises(JobError) as caught:
        model.audio_features(broken, FPS, 12)
    assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT


def test_sync_redraws_crops_deterministically(model):
    windows = model.audio_features(speech(1.0), FPS, FPS)
    faces = crops(3)
    out = model.sync(faces, windows[4:7])
    assert out.shape == (3, 256, 256, 3) and out.dtype == np.uint8
    again = model.sync(faces, [windows[i] for i in range(4, 7)])
    assert np.array_equal(out, again)
    # The audio drives the result: another frame's window, another mouth.
    assert not np.array_equal(model.sync(faces[:1], windows[20:21]), out[:1])


def test_a_photo_repeated_over_a_batch(model):
    """The same crop every frame (a photo): one encode, and each frame still follows its audio."""
    windows = model.audio_features(speech(1.0), FPS, FPS)
    photo = np.repeat(crops(1, seed=3), 4, axis=0)
    latents = model._face_latents(photo)
    assert latents.shape == (4, 8, 32, 32) and all(np.array_equal(latents[0], row) for row in latents)
    out = model.sync(photo, windows[0:4])
    # Alone, the crop gives the same frame up to float noise (batch size picks other kernels).
    assert np.abs(model.sync(photo[:1], windows[0:1]).astype(int) - out[:1]).mean() < 0.5
    assert not np.array_equal(out[0], out[3])


def test_sync_rejects_wrong_shapes(model):
    windows = model.audio_features(speech(0.4), FPS, 4)
    with pytest.raises(ValueError, match="uint8"):
        model.sync(np.zeros((2, 96, 96, 3), np.uint8), windows[0:2])
    with pytest.raises(ValueError, match="features"):
        model.sync(crops(2), windows[0:3])


def test_a_folder_missing_unet_pth_is_model_not_found(copy):
    (copy / "musetalkV15" / "unet.pth").unlink()
    assert layout.backend_of(copy) == "musetalk"
    for attempt in (lambda: layout.check_folder("talker", copy, None), lambda: load_musetalk(copy, "cpu")):
        with pytest.raises(JobError) as caught:
            attempt()
        assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
        assert "musetalkV15/unet.pth" in caught.value.message


@pytest.mark.parametrize("content", [b"not a torch file", "wrong keys"])
def test_a_corrupt_unet_pth_is_model_load_failed(copy, content):
    import torch

    path = copy / "musetalkV15" / "unet.pth"
    if content == "wrong keys":
        torch.save({"conv_in.weight": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(JobError) as caught:
        load_musetalk(copy, "cpu")
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED
    assert "musetalkV15/unet.pth" in caught.value.message


def test_a_whisper_narrower_than_the_unet_is_model_load_failed(copy):
    config = copy / "whisper" / "config.json"
    doc = json.loads(config.read_text())
    doc["d_model"] = 48
    config.write_text(json.dumps(doc))
    with pytest.raises(JobError) as caught:
        load_musetalk(copy, "cpu")
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED
    assert "d_model 48" in caught.value.message and "cross_attention_dim 32" in caught.value.message


def test_a_folder_being_copied_is_registered_only_once_complete(folder, tmp_path):
    """A MuseTalk folder copied into [registry] dir: while files are missing it is not a
    model (not listed; a job naming it fails model_not_found saying what is missing); the
    copy completes and the running daemon serves it, no reload."""
    registry = tmp_path / "models"
    copying = Path(shutil.copytree(folder, registry / "talker"))
    held = tmp_path / "held"
    held.mkdir()
    for name in ("musetalkV15/unet.pth", "whisper/pytorch_model.bin"):  # still to come
        (copying / name).rename(held / Path(name).name)
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(registry)).start()
    try:
        assert "talker" not in listed(d)
        job = {"kind": "talking-head", "inputs": {"face": "astronaut.jpg"},
               "params": {"text": "Hi.", "lipsync": "talker", "width": 96, "height": 96}}
        photo = {"astronaut.jpg": (REPO / "examples" / "talking-head" / "astronaut.jpg").read_bytes()}
        drop_folder(d.root / "inbox", "half", job, photo)
        error = wait_status(d.root, "half", daemon=d)["error"]
        assert error["code"] == ErrorCode.MODEL_NOT_FOUND and "not complete" in error["message"], error
        assert "musetalkV15/unet.pth" in error["message"], error
        assert "whisper/pytorch_model.bin or whisper/model.safetensors" in error["message"], error
        assert "sd-vae" not in error["message"], "only what is missing"

        (held / "unet.pth").rename(copying / "musetalkV15" / "unet.pth")
        assert "talker" not in listed(d), "still a file to come"
        (held / "pytorch_model.bin").rename(copying / "whisper" / "pytorch_model.bin")
        entry = listed(d)["talker"]
        assert entry["backend"] == "musetalk" and entry["kinds"] == ["talking-head"] and entry["available"], entry
        drop_folder(d.root / "inbox", "whole", job, photo)  # accepted now (running it is test_talking_head's)
        started = wait_status(d.root, "whole", {"running", "completed", "failed"}, daemon=d)
        assert started["state"] != "failed" and started["model"] == "talker", started["error"]
    finally:
        d.stop()


def listed(d: Daemon) -> dict[str, dict]:
    with urllib.request.urlopen(d.api + "/api/v1/models", timeout=10) as r:
        return {m["name"]: m for m in json.loads(r.read())["models"]}
