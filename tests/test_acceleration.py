"""`[models.NAME] accelerate` and per-component dtypes (SPEC §11) through a real daemon on the
tiny Wan and LTX models: compile stays within tolerance of the plain call with the same seed,
caches report the blocks they skipped (none with quality = "exact"), compiled code is found
on disk by a second worker start, and bad options are named at start-up, by doctor or by
the load (model_load_failed)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from tests.support import REPO, Daemon, base_env, drop_folder, drop_json, wait_all_final, wait_for
from tests.test_video_generation import decoded_frames, photo_bytes, size_params

SEED = 7


def job(model: str, family: str, **extra) -> dict:
    return {"kind": "text-to-video", "model": model,
            "params": size_params(family, prompt="a lighthouse at dusk", seed=SEED, num_inference_steps=6, **extra)}


def models(tiny, family: str, **variants: dict) -> dict:
    t = size_params(family)
    defaults = {"width": t["width"], "height": t["height"], "num_frames": t["num_frames"]}
    return {f"{family}-{name}": {"path": str(tiny / family), "kinds": ["text-to-video"], "defaults": defaults, **entry}
            for name, entry in variants.items()}


# Mean difference (0–255 per channel) a lossy option may make to the plain call's frames: the
# tiny random-weight models amplify small changes (measured 0.24–1.8 on Wan, 3.9–5.6 on LTX);
# a wrong call (another seed, broken frames) differs by tens.
LOSSY_TOLERANCE = 10.0
LOOSE = {"wan-t2v": {"kind": "first_block", "threshold": 0.5}, "ltx": {"kind": "first_block", "threshold": 0.5}}


@pytest.fixture(scope="module")
def fast(tiny_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("accel")
    registry = {}
    for family in ("wan-t2v", "ltx"):
        registry |= models(
            tiny_models, family,
            plain={},
            regional={"accelerate": {"compile": "regional"}},
            fbc={"accelerate": {"cache": LOOSE[family]}},
            pab={"accelerate": {"cache": {"kind": "pab", "spatial_attention_timestep_skip_range": [0, 1000]}}},
            taylor={"accelerate": {"cache": {"kind": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1}}},
            mag={"accelerate": {"cache": {"kind": "magcache", "threshold": 0.5, "retention_ratio": 0,
                                          "mag_ratios": [1.0, 0.99, 0.99, 0.99]}}},
            flex={"accelerate": {"attention": "flex"}},
            int8={"accelerate": {"quantize": "int8_weight"}},
            lwc={"accelerate": {"layerwise_casting": "float8_e4m3fn"}},
        )
    registry |= models(tiny_models, "wan-t2v",
                       mixed={"dtype": {"transformer": "bfloat16", "default": "float32"}},
                       cudnn={"accelerate": {"attention": "_native_cudnn"}},
                       flash={"accelerate": {"attention": "flash"}})
    registry["svd-fbc"] = {"path": str(tiny_models / "svd"), "accelerate": {"cache": LOOSE["wan-t2v"]}}
    # Compiled, without defaults, on a "GPU" too small for the pipeline's own default size.
    small_gpu = {"path": str(tiny_models / "wan-t2v"), "kinds": ["text-to-video"], "accelerate": {"compile": "regional"},
                 "pipeline": "vidspool_testkinds.oom:SmallGpuWanPipeline"}
    registry |= {"small-gpu": small_gpu, "small-gpu-loaded": small_gpu}
    d = Daemon(base / "spool", workers=["cpu", "cpu"], VIDSPOOL_MODELS=json.dumps(registry),
               VIDSPOOL_WORKERS__COMPILE_CACHE_DIR=str(base / "compiled")).start()
    yield d
    d.stop()


def run(d: Daemon, jobs: dict[str, dict], timeout: float = 400) -> dict[str, dict]:
    for name, doc in jobs.items():
        drop_json(d.root / "inbox", name, doc)
    return wait_all_final(d.root, list(jobs), timeout=timeout, daemon=d)


def frames_of(d: Daemon, job_id: str) -> np.ndarray:
    return decoded_frames(d.root / "outbox" / job_id / "video.mp4").astype(np.int16)


@pytest.mark.parametrize("family", ["wan-t2v", "ltx"])
def test_each_option_completes_and_reports_what_ran(fast, family):
    variants = ("plain", "regional", "fbc", "pab", "mag", "taylor", "flex", "int8", "lwc")
    jobs = {f"{family}-{v}": job(f"{family}-{v}", family) for v in variants}
    jobs |= {f"{family}-{v}-exact": job(f"{family}-{v}", family, quality="exact") for v in ("fbc", "mag", "taylor", "int8", "lwc")}
    docs = run(fast, jobs)
    assert {k: v["state"] for k, v in docs.items()} == {k: "completed" for k in jobs}, docs
    result = {k: v["result"] for k, v in docs.items()}
    assert "accelerate" not in result[f"{family}-plain"]

    compiled = result[f"{family}-regional"]["accelerate"]
    assert compiled["compile"] == "regional" and compiled["compiled"]["warm_up_seconds"] > 0
    plain, regional = frames_of(fast, f"{family}-plain"), frames_of(fast, f"{family}-regional")
    assert plain.shape == regional.shape
    assert np.abs(plain - regional).mean() <= 1.0 and np.abs(plain - regional).max() <= 16
    flex = frames_of(fast, f"{family}-flex")
    # The flex backend itself ran the denoiser's attention (a silent fallback calls it 0 times).
    assert result[f"{family}-flex"]["accelerate"]["attention"] == "flex"
    assert result[f"{family}-flex"]["accelerate"]["attention_calls"] > 0, result[f"{family}-flex"]["accelerate"]
    assert np.abs(plain - flex).mean() <= 1.0

    for cache in ("fbc", "mag", "taylor"):
        lossy, exact = result[f"{family}-{cache}"]["accelerate"], result[f"{family}-{cache}-exact"]["accelerate"]
        assert lossy["quality"] == "default" and lossy["cache"]["on"] and lossy["cache"]["blocks_skipped"] > 0, lossy
        assert exact["quality"] == "exact" and not exact["cache"]["on"] and exact["cache"]["blocks_skipped"] == 0, exact
        assert exact["cache"]["denoiser_calls"] == lossy["cache"]["denoiser_calls"] > 0
        # Without its cache the job makes the plain call's frames.
        assert np.abs(frames_of(fast, f"{family}-{cache}-exact") - plain).mean() <= 1.0
    full = None
    for memory, key, value, stored in (("int8", "quantize", "int8_weight", "int8"),
                                       ("lwc", "layerwise_casting", "float8_e4m3fn", "float8_e4m3fn")):
        shrunk = result[f"{family}-{memory}"]["accelerate"]
        assert shrunk[key] == value
        # exact: a full-precision copy of the model, loaded beside the shrunk one.
        exact = result[f"{family}-{memory}-exact"]
        assert exact["accelerate"]["quality"] == "exact" and exact["accelerate"][key] == "none", exact["accelerate"]
        assert np.abs(frames_of(fast, f"{family}-{memory}-exact") - plain).mean() <= 1.0
        # What ran: the weights as stored, in the narrow dtype and fewer bytes than the copy's.
        full = exact["accelerate"]["weights"]
        assert set(full["dtypes"]) == {"float32"}, full
        assert stored in shrunk["weights"]["dtypes"] and shrunk["weights"]["bytes"] < 0.7 * full["bytes"], shrunk["weights"]
    assert result[f"{family}-flex"]["accelerate"]["weights"] == full  # the lossless options keep the weights
    pab = result[f"{family}-pab"]["accelerate"]["cache"]
    assert pab["kind"] == "pab" and pab["layers_skipped_share"] > 0 and pab["blocks_skipped"] == 0, pab
    # A lossy option changes the frames, a little: the same seed's plain frames, within tolerance.
    for lossy in ("fbc", "mag", "taylor", "pab", "int8", "lwc"):
        difference = np.abs(frames_of(fast, f"{family}-{lossy}") - plain)
        assert 0 < difference.mean() <= LOSSY_TOLERANCE, (lossy, difference.mean())


def test_component_dtypes_are_reported_and_a_table_sets_them(fast):
    docs = run(fast, {"dt-plain": job("wan-t2v-plain", "wan-t2v"), "dt-mixed": job("wan-t2v-mixed", "wan-t2v")})
    assert docs["dt-mixed"]["state"] == "completed", docs["dt-mixed"]
    assert docs["dt-plain"]["result"]["model"]["dtypes"] == {"transformer": "float32", "vae": "float32", "text_encoder": "float32"}
    assert docs["dt-mixed"]["result"]["model"]["dtypes"] == {"transformer": "bfloat16", "vae": "float32", "text_encoder": "float32"}


@pytest.mark.parametrize("model, words", [
    ("wan-t2v-flash", "attention backend 'flash' needs the Python package 'flash_attn'"),
    ("wan-t2v-cudnn", "attention backend '_native_cudnn' does not run on cpu"),
    ("svd-fbc", "supports none"),
])
def test_a_backend_or_cache_this_host_cannot_run_fails_the_load(fast, model, words):
    job_id = f"bad-{model}"
    if model.startswith("svd"):
        drop_folder(fast.root / "inbox", job_id, {"kind": "image-to-video", "model": model, "inputs": {"image": "p.png"},
                                                  "params": size_params("svd")}, {"p.png": photo_bytes()})
    else:
        drop_json(fast.root / "inbox", job_id, job(model, "wan-t2v"))
    status = wait_all_final(fast.root, [job_id], timeout=120, daemon=fast)[job_id]
    assert status["state"] == "failed" and status["error"]["code"] == "model_load_failed", status
    assert words in status["error"]["message"] and "accelerate" in status["error"]["message"], status["error"]


def test_a_compiled_model_warms_up_at_the_size_a_job_asks(fast):
    """Its pipeline's default size (832×480×81) runs out of memory here; jobs ask 32×32×9."""
    small = {"kind": "text-to-video", "params": {"prompt": "a lighthouse", "width": 32, "height": 32, "num_frames": 9,
                                                 "num_inference_steps": 2}}
    # Loaded for a job: the warm-up runs at the job's size.
    doc = run(fast, {"small-gpu": {**small, "model": "small-gpu"}})["small-gpu"]
    assert doc["state"] == "completed", doc["error"]
    compiled = doc["result"]["accelerate"]["compiled"]
    assert compiled["warm_up_size"] == "32x32x9" and "warm_up_failed" not in compiled, compiled

    # Loaded for no job (`models load`): the warm-up at the default size fails, is logged,
    # and the model is kept; the first job's own call compiles.
    with urllib.request.urlopen(urllib.request.Request(fast.api + "/api/v1/models/small-gpu-loaded/load", data=b"",
                                                       method="POST"), timeout=10) as r:
        assert r.status == 202
    wait_for(lambda: any(e.get("event") == "model.warm_up_failed" for e in fast.log_events()), 300, "the warm-up failed")
    failed = next(e for e in fast.log_events() if e.get("event") == "model.warm_up_failed")
    assert (failed["model"], failed["size"]) == ("small-gpu-loaded", "832x480x81") and "OutOfMemoryError" in failed["error"]
    wait_for(lambda: any("small-gpu-loaded" in w["models"] for w in queue(fast)["devices"]), 60, "it is held")
    doc = run(fast, {"small-gpu-loaded": {**small, "model": "small-gpu-loaded"}})["small-gpu-loaded"]
    assert doc["state"] == "completed", doc["error"]
    assert doc["result"]["model"]["loaded"] is False, doc["result"]["model"]
    assert "OutOfMemoryError" in doc["result"]["accelerate"]["compiled"]["warm_up_failed"], doc["result"]["accelerate"]


def queue(d: Daemon) -> dict:
    with urllib.request.urlopen(d.api + "/api/v1/queue", timeout=10) as r:
        return json.loads(r.read())


def test_a_second_worker_start_finds_the_compiled_code(tiny_models, tmp_path):
    registry = models(tiny_models, "wan-t2v", regional={"accelerate": {"compile": "regional"}})
    settings = {"VIDSPOOL_MODELS": json.dumps(registry), "VIDSPOOL_WORKERS__COMPILE_CACHE_DIR": str(tmp_path / "compiled")}
    runs = []
    for start in ("cold", "warm"):
        d = Daemon(tmp_path / "spool", **settings).start()
        try:
            runs.append(run(d, {start: job("wan-t2v-regional", "wan-t2v")})[start])
        finally:
            d.stop()
    cold, warm = (r["result"] for r in runs)
    assert cold["accelerate"]["compiled"]["cache_misses"] > 0 and cold["accelerate"]["compiled"]["cache_hits"] == 0
    assert warm["accelerate"]["compiled"]["cache_misses"] == 0 and warm["accelerate"]["compiled"]["cache_hits"] > 0
    assert warm["model"]["load_seconds"] < cold["model"]["load_seconds"], (cold["model"], warm["model"])
    folder = cold["accelerate"]["compiled"]["cache_dir"]
    assert folder.startswith(str(tmp_path / "compiled" / "wan-t2v-regional" / "torch-")) and folder.endswith("/cpu")


@pytest.mark.parametrize("accelerate, words", [
    ({"compile": "fast"}, "accelerate.compile"),
    ({"attention": "warp"}, "unknown backend 'warp'"),
    ({"cache": {"kind": "teacache"}}, "accelerate.cache"),
    ({"cache": {"kind": "faster"}}, "'first_block', 'taylorseer', 'magcache', 'pab'"),
    ({"cache": {"kind": "first_block", "treshold": 0.1}}, "treshold"),
    ({"compile": "regional", "cache": {"kind": "first_block"}}, "compile = \"none\" with a cache"),
    ({"quantize": "int4"}, "accelerate.quantize"),
    ({"quantize": "int8_weight", "layerwise_casting": "float8_e4m3fn"}, "choose one"),
])
def test_bad_options_stop_start_up_naming_the_key(tmp_path, accelerate, words):
    registry = {"m": {"path": str(tmp_path), "accelerate": accelerate}}
    out = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=base_env(VIDSPOOL_MODELS=json.dumps(registry), VIDSPOOL_SPOOL__ROOT=str(tmp_path / "s")))
    assert out.returncode == 2 and words in out.stderr and "models.m" in out.stderr, out.stderr


def test_doctor_names_options_this_host_or_model_cannot_run(tiny_models, tmp_path):
    registry = {"svd-cached": {"path": str(tiny_models / "svd"), "accelerate": {"cache": {"kind": "first_block"}}},
                "wan-flash": {"path": str(tiny_models / "wan-t2v"), "accelerate": {"attention": "flash"}}}
    root = tmp_path / "spool"
    root.mkdir()
    out = subprocess.run([sys.executable, "-m", "daemon", "doctor"], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=base_env(VIDSPOOL_MODELS=json.dumps(registry), VIDSPOOL_SPOOL__ROOT=str(root)))
    assert out.returncode == 1, out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("[FAIL]")]
    assert any("[models.svd-cached] accelerate.cache" in line and "supports no step cache" in line for line in lines), lines
    assert any("[models.wan-flash] accelerate.attention" in line and "flash_attn" in line for line in lines), lines


def test_calibrate_writes_magcache_ratios_that_the_daemon_then_uses(tiny_models, tmp_path):
    config = tmp_path / "vidspool.toml"
    config.write_text(f"""
[models.wan-mag]
path = "{tiny_models / 'wan-t2v'}"
kinds = ["text-to-video"]
defaults = {{ width = 32, height = 32, num_frames = 5 }}
accelerate.cache = {{ kind = "magcache", threshold = 0.5, retention_ratio = 0 }}
""")
    root = tmp_path / "spool"
    root.mkdir()

    def vidspool(*args):
        return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300, env=base_env(VIDSPOOL_SPOOL__ROOT=str(root)))

    before = vidspool("doctor")
    assert "[models.wan-mag] accelerate.cache: magcache has no mag_ratios: run `vidspool models calibrate wan-mag`" in before.stdout
    out = vidspool("models", "calibrate", "wan-mag", "--steps", "6", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "calibration" / "wan-mag.magcache.json").read_text())
    assert saved["steps"] == 6 and len(saved["mag_ratios"]) == 6 and saved["mag_ratios"][0] == 1.0
    assert all(r > 0 for r in saved["mag_ratios"]) and len(set(saved["mag_ratios"][1:])) > 1, saved
    assert "magcache has no mag_ratios" not in vidspool("doctor").stdout

    d = Daemon(root)
    d.proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config), "run"], cwd=REPO,
                              env=base_env(**d.settings), stdout=open(d.log_path, "ab"), stderr=subprocess.STDOUT)
    try:
        d.wait_ready()
        doc = run(d, {"calibrated": job("wan-mag", "wan-t2v")})["calibrated"]
    finally:
        d.stop()
    assert doc["state"] == "completed", doc
    assert doc["result"]["accelerate"]["cache"]["blocks_skipped"] > 0, doc["result"]["accelerate"]
