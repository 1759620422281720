#!/usr/bin/env python
"""Live-preview overhead (`make bench`): text-to-video job time with previews at the default
([preview] every_steps 5, max_side 512) ÷ without (every_steps 0), same run, CPU workers.

Two real daemons (tests/support.py `Daemon`, one CPU worker each) on their own spools, one
with previews and one without, take turns: the same jobs alternate between them, one job at
a time, so drift hits both alike. Per model:

  first job   a worker's first job on the model: loading it, and with previews the map's
              fit (a few random latents decoded by the model's own VAE, least squares)
  warm jobs   the next ones in pairs (the fitted map is kept with the model): the median of
              the per-pair ratios
  cost share  what the worker itself timed around the preview code (making and writing the
              previews, and the fit on the first job) ÷ the job's time: the same cost without
              the noise of a shared machine, which the ratios carry

on the tiny Wan2.1 of scripts/tiny_models.py and a mid-size Wan2.1 built here (random
weights, a wider VAE and a deeper transformer, so that one job takes tens of seconds).
Job time is the worker's `result.seconds.run`. Prints a table and writes bench/out/previews.json.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench.run import machine  # noqa: E402
from tests.support import Daemon, drop_json, wait_status  # noqa: E402

WARM_JOBS = {"tiny": 12, "mid": 5}  # pairs of warm jobs per model
GOAL = 1.03
JOBS = {  # model -> params of each job
    "tiny": {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 20},
    "mid": {"width": 256, "height": 256, "num_frames": 17, "num_inference_steps": 20},
}


def build_mid(dest: Path, vae_dim: int = 32, vae_mult: tuple = (1, 2, 4, 4), layers: int = 4) -> Path:
    """A Wan2.1 folder between the tiny one and the real 1.3 B: VAE base_dim 32 (real: 96),
    a 4-layer transformer of width 256; random weights, saved by save_pretrained."""
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from tiny_models import _quiet, _seeded, _t5_encoder, _t5_tokenizer, _wan_scheduler

    tokenizer = _t5_tokenizer(model_max_length=512)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(0, lambda: _t5_encoder(tokenizer, 64, umt5=True)),
        vae=_seeded(0, lambda: AutoencoderKLWan(base_dim=vae_dim, z_dim=16, dim_mult=list(vae_mult), num_res_blocks=1,
                                                temperal_downsample=[False, True, True])),
        transformer=_seeded(0, lambda: WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, in_channels=16, out_channels=16,
            text_dim=64, freq_dim=64, ffn_dim=1024, num_layers=layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)),
        scheduler=_wan_scheduler(),
    )
    with _quiet():
        pipe.save_pretrained(dest)
    return dest


def run_job(d: Daemon, job_id: str, model: str) -> dict:
    drop_json(d.root / "inbox", job_id, {"kind": "text-to-video", "model": model,
                                         "params": {"prompt": "a red fox runs through snow", "seed": 1, **JOBS[model]}})
    doc = wait_status(d.root, job_id, timeout=1800, daemon=d)
    if doc["state"] != "completed":
        raise SystemExit(f"{job_id}: {doc['state']} {doc['error']}")
    return doc["result"]


def measure(on: Daemon, off: Daemon, model: str, warm_jobs: int) -> dict:
    first = {"on": run_job(on, f"{model}-first-on", model), "off": run_job(off, f"{model}-first-off", model)}
    warm: dict[str, list[dict]] = {"on": [], "off": []}
    for n in range(warm_jobs):
        pair = (("on", on), ("off", off)) if n % 2 == 0 else (("off", off), ("on", on))
        for side, d in pair:
            warm[side].append(run_job(d, f"{model}-{n}-{side}", model))
    on_runs = [r["seconds"]["run"] for r in warm["on"]]
    off_runs = [r["seconds"]["run"] for r in warm["off"]]
    previews = first["on"]["previews"]
    return {
        "params": JOBS[model],
        "first_on_seconds": first["on"]["seconds"]["run"], "first_off_seconds": first["off"]["seconds"]["run"],
        "first_ratio": round(first["on"]["seconds"]["run"] / first["off"]["seconds"]["run"], 4),
        "load_seconds": first["on"]["seconds"]["load_model"],
        "fit_seconds": previews["fit_seconds"],
        "warm_on_seconds": on_runs, "warm_off_seconds": off_runs,
        "warm_ratio": round(statistics.median(a / b for a, b in zip(on_runs, off_runs)), 4),
        "previews_per_job": warm["on"][0]["previews"]["written"],
        "preview_seconds_per_job": statistics.median(r["previews"]["seconds"] for r in warm["on"]),
        "warm_cost_share": round(statistics.median(r["previews"]["seconds"] / r["seconds"]["run"] for r in warm["on"]), 5),
        "first_cost_share": round((previews["seconds"] + previews["fit_seconds"]) / first["on"]["seconds"]["run"], 5),
    }


def main() -> int:
    import argparse

    import tiny_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(JOBS), default=list(JOBS))
    parser.add_argument("--warm-jobs", type=int, help="pairs of warm jobs per model (default: tiny 12, mid 5)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidspool-previewbench-"))
    registry = work / "models"
    tiny_models.build("wan-t2v", registry, name="tiny")
    build_mid(registry / "mid")
    daemons = {side: Daemon(work / f"spool-{side}", host=f"bench-{side}", workers=["cpu"],
                            VIDSPOOL_REGISTRY__DIR=str(registry),
                            VIDSPOOL_PREVIEW__EVERY_STEPS="5" if side == "on" else "0").start()
               for side in ("on", "off")}
    results: dict = {"machine": machine(), "command": ".venv/bin/python bench/previews.py", "goal": GOAL}
    try:
        for model in args.models:
            results[model] = measure(daemons["on"], daemons["off"], model, args.warm_jobs or WARM_JOBS[model])
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "previews.json").write_text(json.dumps(results, indent=1))
    for model in args.models:
        r = results[model]
        p = r["params"]
        print(f"previews {model} Wan ({p['width']}x{p['height']}, {p['num_frames']} frames, {p['num_inference_steps']} steps): "
              f"warm jobs with ÷ without (median of {len(r['warm_on_seconds'])} pairs) {r['warm_ratio']:.3f} "
              f"({'PASS' if r['warm_ratio'] <= GOAL else 'MISS'} ≤ {GOAL}), medians {statistics.median(r['warm_on_seconds']):.3f} s "
              f"and {statistics.median(r['warm_off_seconds']):.3f} s; first job {r['first_on_seconds']:.3f} ÷ "
              f"{r['first_off_seconds']:.3f} = {r['first_ratio']:.3f} (load {r['load_seconds']:.2f} s, fit {r['fit_seconds']:.3f} s); "
              f"{r['previews_per_job']} previews/job, {r['preview_seconds_per_job'] * 1000:.1f} ms making them; "
              f"cost share warm {r['warm_cost_share'] * 100:.2f} %, first job {r['first_cost_share'] * 100:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
