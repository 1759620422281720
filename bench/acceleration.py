#!/usr/bin/env python
"""What each `[models.NAME] accelerate` option buys (`make bench`): seconds per step, default ÷
each option, the frames' difference from the default call (same seed, uint8), peak memory on
a GPU, and compile time cold vs found on disk.

CPU (default): a mid-size random-weight Wan2.1 built here (an 8-layer transformer of width 256
over 1,280 tokens, a small VAE: the transformer dominates), 256×256×17, 12 steps.
GPU (bench/GPU.md): `--device cuda --folder F --size 832x480x81 --steps 10 --options gpu` on
the real Wan2.1-T2V-1.3B architecture that `bench/gpu_wan.py` builds, in bfloat16.

Each option runs in a fresh process through the worker's own code (pipeline/models/resident.py
ModelStore, then the `accelerate` job wrapper), one warm-up call and then a timed call; seconds
per step come from the step callback (first step left out). Compile runs twice on an empty
cache folder: the first process compiles, the second finds the code on disk. MagCache's ratios
are measured in the same run (pipeline/calibrate.py) before its timed calls. Prints a table and
writes bench/out/acceleration[-cuda].json after every option.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

STEPS = 12
OPTIONS = {
    "cpu": {
        "default": {},
        "compile regional": {"compile": "regional"},
        "compile full": {"compile": "full"},
        "attention flex": {"attention": "flex"},
        "first_block 0.05": {"cache": {"kind": "first_block", "threshold": 0.05}},
        "first_block 0.2": {"cache": {"kind": "first_block", "threshold": 0.2}},
        "pab range 2": {"cache": {"kind": "pab"}},
        "pab range 4": {"cache": {"kind": "pab", "spatial_attention_block_skip_range": 4}},
        "magcache 0.06": {"cache": {"kind": "magcache", "threshold": 0.06}},
        "magcache 0.12": {"cache": {"kind": "magcache", "threshold": 0.12}},
        "taylorseer interval 3": {"cache": {"kind": "taylorseer", "cache_interval": 3, "disable_cache_before_step": 2}},
        "quantize int8_weight": {"quantize": "int8_weight"},
        "layerwise float8_e4m3fn": {"layerwise_casting": "float8_e4m3fn"},
    },
    "gpu": {
        "default": {},
        "attention _native_cudnn": {"attention": "_native_cudnn"},
        "compile regional": {"compile": "regional"},
        "compile regional + _native_cudnn": {"compile": "regional", "attention": "_native_cudnn"},
        "compile regional + _flash_3": {"compile": "regional", "attention": "_flash_3"},
        "first_block 0.05": {"cache": {"kind": "first_block", "threshold": 0.05}},
        "first_block 0.1": {"cache": {"kind": "first_block", "threshold": 0.1}},
        "magcache 0.06": {"cache": {"kind": "magcache", "threshold": 0.06}},
        "magcache 0.12": {"cache": {"kind": "magcache", "threshold": 0.12}},
        "taylorseer interval 3": {"cache": {"kind": "taylorseer", "cache_interval": 3, "disable_cache_before_step": 2}},
        "pab range 2": {"cache": {"kind": "pab"}},
        "pab range 4": {"cache": {"kind": "pab", "spatial_attention_block_skip_range": 4}},
        "quantize float8_weight": {"quantize": "float8_weight"},
        "layerwise float8_e4m3fn": {"layerwise_casting": "float8_e4m3fn"},
    },
}


def build(dest: Path) -> Path:
    from bench.previews import build_mid

    return build_mid(dest, vae_dim=8, vae_mult=(1, 1, 1, 1), layers=8)  # a small VAE: the transformer dominates


def one(request: dict) -> dict:
    """One option in this process: load (with its warm-up), then a timed call."""
    import os

    import numpy as np
    import torch

    from pipeline.calibrate import ratios_of
    from pipeline.diffusion import to_uint8_frames
    from pipeline.models.resident import ModelStore

    size, steps, device = request["size"], request["steps"], request["device"]
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    config = {"path": request["folder"], "defaults": dict(size), "dtype": request["dtype"], "accelerate": {}}
    store = ModelStore("cuda:0" if device == "cuda" else "cpu")
    accelerate = request["accelerate"]
    if accelerate.get("cache", {}).get("kind") == "magcache":
        resident, _ = store.ensure("calibrate", config)
        accelerate["cache"]["mag_ratios"] = ratios_of(resident.pipe, config, steps)
        store.unload("calibrate")
    config["accelerate"] = accelerate
    started = time.monotonic()
    resident, _ = store.ensure("bench", config)
    load = time.monotonic() - started
    pipe, accelerated = resident.pipe, resident.accelerated
    stamps: list[float] = []

    def step_ends(pipeline, index, timestep, tensors):
        if device == "cuda":
            torch.cuda.synchronize()  # GPU-true step times
        stamps.append(time.monotonic())
        return tensors

    def call():
        stamps.clear()
        out = pipe("a lighthouse at dusk", **size, num_inference_steps=steps, output_type="np",
                   generator=torch.Generator("cpu").manual_seed(1), callback_on_step_end=step_ends)
        return to_uint8_frames(out.frames)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if accelerated is None:
        call()  # the same warm-up call the others had at load
        frames, report = call(), {}
    else:
        with accelerated.job(pipe, False, steps):
            call()
        with accelerated.job(pipe, False, steps) as report:
            frames = call()
    np.save(request["frames"], np.stack(frames))
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"load_seconds": round(load, 3), "seconds_per_step": round(per_step, 4), "report": report,
            "peak_gib": round(peak / 2**30, 2) if peak else None}


def run_one(request: dict, cache: Path) -> dict:
    env = {"VIDSPOOL_COMPILE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(request)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    from bench.run import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--folder", type=Path, help="a Wan2.1 folder (default: build the mid-size one)")
    parser.add_argument("--size", default="256x256x17", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on a GPU")
    parser.add_argument("--options", choices=tuple(OPTIONS), default=None, help="default: the device's")
    parser.add_argument("--only", help="comma-separated option labels to run (default: all)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    width, height, frames = (int(x) for x in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="vidspool-bench-accel-"))
    folder = args.folder or build(work / "mid-wan")
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    options = OPTIONS[args.options or ("gpu" if args.device == "cuda" else "cpu")]
    if args.only:
        options = {k: v for k, v in options.items() if k in args.only.split(",") or k == "default"}
    out = REPO / "bench" / "out" / ("acceleration.json" if args.device == "cpu" else "acceleration-cuda.json")
    out.parent.mkdir(exist_ok=True)
    rows: dict = {}
    for label, accelerate in options.items():
        request = {"folder": str(folder), "accelerate": json.loads(json.dumps(accelerate)), "device": args.device,
                   "size": {"width": width, "height": height, "num_frames": frames}, "steps": args.steps,
                   "dtype": dtype, "frames": str(work / f"{label}.npy")}
        cache = work / "compiled" / label.replace(" ", "-")
        rows[label] = run_one(request, cache)
        if accelerate.get("compile") and "error" not in rows[label]:
            rows[label]["cached"] = run_one({**request, "frames": str(work / f"{label}.cached.npy")}, cache)
        print(label, json.dumps(rows[label]), flush=True)
        out.write_text(json.dumps({"machine": machine(), "raw": rows}, indent=2))
    base = np.load(work / "default.npy").astype(np.int16)
    table = []
    for label, row in rows.items():
        if "error" in row:
            table.append({"option": label, "seconds_per_step": "failed: " + row["error"][:120]})
            continue
        diff = np.abs(np.load(work / f"{label}.npy").astype(np.int16) - base)
        cache = (row["report"] or {}).get("cache") or {}
        compiled = (row["report"] or {}).get("compiled") or {}
        table.append({
            "option": label, "seconds_per_step": row["seconds_per_step"],
            "speed_vs_default": round(rows["default"]["seconds_per_step"] / row["seconds_per_step"], 2),
            "mean_abs_diff": round(float(diff.mean()), 3), "max_abs_diff": int(diff.max()),
            "blocks_skipped": f"{cache['blocks_skipped']}/{cache['blocks_total']}" if cache else "",
            "layers_skipped_share": cache.get("layers_skipped_share", ""),
            "compile_cold_s": compiled.get("warm_up_seconds", ""),
            "compile_cached_s": ((row.get("cached") or {}).get("report") or {}).get("compiled", {}).get("warm_up_seconds", ""),
            "peak_gib": row.get("peak_gib") or "",
        })
    print(f"\n{machine()}\nWan2.1 {folder}, {width}x{height}x{frames}, {args.steps} steps, {dtype}, {args.device}\n")
    keys = list(next(r for r in table if "speed_vs_default" in r))
    print(" | ".join(keys))
    for row in table:
        print(" | ".join(str(row.get(k, "")) for k in keys))
    out.write_text(json.dumps({"machine": machine(), "rows": table, "raw": rows}, indent=2))


if __name__ == "__main__":
    main()
