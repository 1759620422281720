#!/usr/bin/env python
"""What each `[models.NAME] accelerate` option buys on CPU (`make bench`): seconds per step of
a mid-size random-weight Wan2.1 (an 8-layer transformer of width 256 over 1,280 tokens, a
small VAE: the transformer dominates), default ÷ each option, the frames' difference from the
default call (same seed, uint8), and compile time cold vs found on disk.

Each option runs in a fresh process through the worker's own code (pipeline/models/resident.py
ModelStore, then the `accelerate` job wrapper), one warm-up call and then a timed call of
STEPS steps; seconds per step come from the step callback (first step left out). Compile
runs twice on an empty cache folder: the first process compiles, the second finds the code
on disk. Prints a table and writes bench/out/acceleration.json.
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

SIZE = {"width": 256, "height": 256, "num_frames": 17}
STEPS = 12
OPTIONS = {
    "default": {},
    "compile regional": {"compile": "regional"},
    "compile full": {"compile": "full"},
    "attention flex": {"attention": "flex"},
    "first_block 0.05": {"cache": {"kind": "first_block", "threshold": 0.05}},
    "first_block 0.2": {"cache": {"kind": "first_block", "threshold": 0.2}},
    "pab range 2": {"cache": {"kind": "pab"}},
    "pab range 4": {"cache": {"kind": "pab", "spatial_attention_block_skip_range": 4}},
}


def build(dest: Path) -> Path:
    from bench.previews import build_mid

    return build_mid(dest, vae_dim=8, vae_mult=(1, 1, 1, 1), layers=8)  # a small VAE: the transformer dominates


def one(folder: str, accelerate: dict, frames_out: str) -> dict:
    """One option in this process: load (with its warm-up), then a timed call."""
    import os

    import numpy as np
    import torch

    from pipeline.diffusion import to_uint8_frames
    from pipeline.models.resident import ModelStore

    torch.set_num_threads(os.cpu_count() or 1)
    config = {"path": folder, "defaults": dict(SIZE), "accelerate": accelerate}
    store = ModelStore("cpu")
    started = time.monotonic()
    resident, _ = store.ensure("bench", config)
    load = time.monotonic() - started
    pipe = resident.pipe
    accelerated = resident.accelerated
    stamps: list[float] = []

    def call():
        stamps.clear()
        out = pipe("a lighthouse at dusk", **SIZE, num_inference_steps=STEPS, output_type="np",
                   generator=torch.Generator("cpu").manual_seed(1),
                   callback_on_step_end=lambda p, i, t, k: stamps.append(time.monotonic()) or k)
        return to_uint8_frames(out.frames)

    if accelerated is None:
        call()  # the same warm-up call the others had at load
        frames, report = call(), {}
    else:
        with accelerated.job(pipe, False, STEPS):
            call()
        with accelerated.job(pipe, False, STEPS) as report:
            frames = call()
    np.save(frames_out, np.stack(frames))
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {"load_seconds": round(load, 3), "seconds_per_step": round(per_step, 4), "report": report}


def run_one(folder: Path, accelerate: dict, frames: Path, cache: Path) -> dict:
    env = {"VIDSPOOL_COMPILE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, __file__, "--one", str(folder), json.dumps(accelerate), str(frames)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"{accelerate}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    from bench.run import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], json.loads(args.one[1]), args.one[2])))
        return
    work = Path(tempfile.mkdtemp(prefix="vidspool-bench-accel-"))
    folder = build(work / "mid-wan")
    rows = {}
    for label, accelerate in OPTIONS.items():
        cache = work / "compiled" / label.replace(" ", "-")
        rows[label] = run_one(folder, accelerate, work / f"{label}.npy", cache)
        if accelerate.get("compile"):
            rows[label]["cached"] = run_one(folder, accelerate, work / f"{label}.cached.npy", cache)
        print(label, json.dumps(rows[label]), flush=True)
    base = np.load(work / "default.npy").astype(np.int16)
    table = []
    for label, row in rows.items():
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
        })
    print(f"\n{machine()}\nmid-size Wan2.1 (8 layers, width 256, {SIZE}, {STEPS} steps), float32\n")
    keys = list(table[0])
    print(" | ".join(keys))
    for row in table:
        print(" | ".join(str(row[k]) for k in keys))
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "acceleration.json").write_text(json.dumps({"machine": machine(), "rows": table, "raw": rows}, indent=2))


if __name__ == "__main__":
    main()
