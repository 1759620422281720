#!/usr/bin/env python
"""Wan2.1-T2V-1.3B through the daemon and directly through diffusers, in one run.

    python bench/gpu_wan.py --scale full --device cuda --out $OUT/gpu_wan.json   # on a GPU
    python bench/gpu_wan.py --scale tiny --device cpu --out /tmp/gpu_wan_tiny.json  # the flow, here
    python bench/gpu_wan.py --count-params                                        # meta device only

`--scale full` builds the real Wan2.1-T2V-1.3B architecture with RANDOM weights from its
published configs (transformer 1.42 B parameters, UMT5-XXL encoder 5.68 B, Wan VAE 0.13 B),
saves it as a diffusers folder with `save_pretrained` under --workdir (dtypes as published:
text encoder bf16, transformer and VAE fp32; --transformer-dtype bfloat16 halves the
transformer's file), synced to disk, and registers it with a real `python -m daemon run` (tests/support.py `Daemon`,
one worker on cuda:0) through VIDSPOOL_MODELS, so the worker loads it with `from_pretrained`
like a downloaded model. `--scale tiny` uses scripts/tiny_models.py's "wan-t2v" folder instead
(32×32, 5 frames, 2 steps) to check the whole flow on a CPU in about a minute.

Then, in this order:
  daemon  --jobs text-to-video jobs (480×832, 33 frames, 10 steps, seed 1, fps 16; default 4),
          one at a time, with dtype bfloat16 in the model's registry entry: job 1 is cold
          (worker imports + model load), job 2 is dropped the moment job 1 reads completed
          ("back to back": the worker may still be tidying up after job 1), jobs 3.. after
          --gap seconds (2) of idle: a warm model in an idle daemon, the headline case.
          Wall time per job = from just before the rename into inbox/ to the first poll
          (every --poll s, 5 ms) that reads state "completed" in outbox/<id>/status.json. The
          job's log.jsonl events (job.queued, job.started, generation.start, job.completed)
          are kept as seconds after the drop. After each job GET /api/v1/queue gives the
          worker's model_loads and memory {used, total, peak_allocated}. The daemon is then
          stopped, so the GPU is free.
  direct  the same folder through plain diffusers in this process:
          WanPipeline.from_pretrained(folder, dtype=bfloat16).to(device), then --direct-runs
          calls (default 3; the first is the warm-up) of exactly what the worker does:
          pipe(prompt, width, height, num_frames, num_inference_steps,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
               callback_on_step_end=<timestamps>)
          + pipeline.diffusion.to_uint8_frames + pipeline.kinds.video_generation
          .write_video_results (video.mp4, thumb.jpg, preview.gif: the worker's own encoding
          code, with a stand-in for the job context). One more call with a
          torch.cuda.synchronize() in the step callback gives GPU-true step times.

Figures (all in the JSON; the table shows the main ones):
  ratio_total    median warm idle daemon wall (jobs 3..: drop -> completed) / median warm
                 direct total (runs 2..: pipe + frames + write_video_results). Target <= 1.03.
                 ratio_total_back_to_back: the same for job 2.
  ratio_denoise  median warm daemon result.seconds.denoise_and_decode / median warm direct
                 pipe() time (the same call, inside the worker versus here).
  seconds_per_step  both measured like pipeline/diffusion.py does: (last step callback -
                 first) / (steps - 1), no GPU sync; plus the synced per-step median (direct).
  load           job 1's result.model.load_seconds; jobs 2..: result.model.loaded (want
                 false), load_seconds (want 0) and result.seconds.load_model (the lookup).
  peak memory    daemon: the worker's torch.cuda.max_memory_allocated() since it started
                 (load and all jobs); direct: max_memory_allocated() over load + calls and
                 per call. On a CPU: the worker's RSS and this process's max RSS.
  same_output    whether the daemon's video.mp4 (sha256 in result.files) equals the direct
                 run's, same seed: a check that both did the same work.

The JSON is rewritten after every phase, so a run cut short still leaves its figures.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/ (this script's folder, sys.path[0]) holds profile.py, which would shadow the standard
# library's `profile` that torch._dynamo imports through cProfile: take bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.support import PLUGINS, Daemon, drop_json, status  # noqa: E402
from contract.files import file_sha256  # noqa: E402  (the hash the daemon puts in result.files)

PROMPT = "A cat walks slowly across a sunny garden while the camera pans to the left."
SEED = 1
FPS = 16
SIZES = {
    "full": {"width": 832, "height": 480, "num_frames": 33, "num_inference_steps": 10},
    "tiny": {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2},
}
MODEL_NAME = {"full": "wan-1.3b", "tiny": "wan-tiny"}
TARGETS = {"ratio_total_max": 1.03, "warm_load_seconds": 0.0}

# The published Wan2.1-T2V-1.3B configs. Transformer: diffusers scripts/convert_wan_to_diffusers.py,
# get_transformer_config("Wan-T2V-1.3B") (huggingface/diffusers @ 58eb52c0), plus the class
# defaults that the Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json also lists
# (rope_max_seq_len 1024, image_dim null). VAE: the same script builds AutoencoderKLWan() with its
# defaults (base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4], num_res_blocks 2, temperal_downsample
# [False, True, True], the published latents_mean/std) and leaves it fp32. Text encoder: the
# script loads google/umt5-xxl (UMT5EncoderModel, bf16); its config is below. Scheduler: the
# script's UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
# num_train_timesteps=1000, flow_shift=3.0) (3.0 for 480p T2V).
WAN_13B_TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}
UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "initializer_factor": 1.0,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": True,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "num_train_timesteps": 1000, "flow_shift": 3.0}
# Parameter counts of the above (counted on the meta device with diffusers 0.42.1 and
# transformers 5.23.0); the full build checks its modules against them.
EXPECTED_PARAMS = {"transformer": 1_418_996_800, "text_encoder": 5_680_910_336, "vae": 126_892_531}
STAMP = ".gpu-wan-stamp"

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def rnd(x, n=4):
    return None if x is None else round(x, n)


def gib(b) -> float | None:
    return None if b is None else round(b / 2**30, 2)



def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- environment ------------------------------------------------------------------------------
def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "device": device, "argv": sys.argv}
    for name in ("diffusers", "transformers", "accelerate", "av", "huggingface_hub", "safetensors", "pydantic"):
        try:
            env[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - reported, not fatal here
            env[name] = f"missing ({type(exc).__name__})"
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=gib(p.total_memory), sm_count=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return env


# -- the model folder -----------------------------------------------------------------------------
def full_components(device: str, layers: int | None = None, transformer_dtype: str = "float32"):
    """The Wan2.1-T2V-1.3B modules with random weights, made directly on `device` ("meta":
    shapes only, no memory). As published: text encoder bf16, transformer fp32 (the convert
    script's default; "bfloat16" halves its file), VAE fp32. The daemon and the direct call
    both load with dtype=bfloat16, which keeps the transformer's _keep_in_fp32_modules in fp32
    either way. `layers` (transformer and encoder depth) only shrinks the model for checks."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    enc_cfg, tr_cfg = dict(UMT5_XXL), dict(WAN_13B_TRANSFORMER)
    if layers:
        enc_cfg.update(num_layers=layers, num_decoder_layers=layers)
        tr_cfg.update(num_layers=layers)
    torch.manual_seed(0)
    with torch.device(device):
        # _from_config(dtype=) initialises in bf16: 5.7 B parameters never exist in fp32.
        text_encoder = UMT5EncoderModel._from_config(UMT5Config(**enc_cfg), dtype=torch.bfloat16).eval()
        transformer = WanTransformer3DModel(**tr_cfg).eval()
        if transformer_dtype != "float32":
            # Like from_pretrained(dtype=...): names matching _keep_in_fp32_modules stay fp32.
            keep = tuple(WanTransformer3DModel._keep_in_fp32_modules or ())
            with torch.no_grad():
                for pname, p in transformer.named_parameters():
                    if not any(k in pname for k in keep):
                        p.data = p.data.to(getattr(torch, transformer_dtype))
        vae = AutoencoderKLWan().eval()
    return {"text_encoder": text_encoder, "transformer": transformer, "vae": vae}


def count_params(modules: dict) -> dict[str, int]:
    return {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}


def build_full(folder: Path, device: str, layers: int | None, transformer_dtype: str) -> dict:
    """Writes the full-size folder (reused when its stamp matches). Returns timings and sizes."""
    import diffusers
    import torch
    import transformers
    from diffusers import UniPCMultistepScheduler, WanPipeline

    import tiny_models

    stamp = json.dumps({"transformer": WAN_13B_TRANSFORMER, "text_encoder": UMT5_XXL, "scheduler": SCHEDULER,
                        "layers": layers, "transformer_dtype": transformer_dtype,
                        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]},
                       sort_keys=True, default=str)
    if (folder / STAMP).is_file() and (folder / STAMP).read_text() == stamp:
        say(f"model folder {folder} already built (stamp matches): reused")
        return {"reused": True, "bytes": folder_bytes(folder)}

    build_device = device if device.startswith("cuda") else "cpu"
    say(f"building Wan2.1-T2V-1.3B with random weights on {build_device}"
        f"{f' (depth cut to {layers} layers)' if layers else ''}, transformer saved as {transformer_dtype} ...")
    t = time.monotonic()
    with tiny_models._quiet():
        tokenizer = tiny_models._t5_tokenizer(model_max_length=512)  # ids < 400 < vocab 256384
        modules = full_components(build_device, layers, transformer_dtype)
        sync(device)
        build_s = time.monotonic() - t
        params = count_params(modules)
        say(f"built in {build_s:.1f}s: " + ", ".join(f"{k} {v / 1e6:,.1f}M" for k, v in params.items()))
        if params != EXPECTED_PARAMS and not layers:
            say(f"WARNING: parameter counts differ from the expected {EXPECTED_PARAMS}")
        pipe = WanPipeline(tokenizer=tokenizer, scheduler=UniPCMultistepScheduler(**SCHEDULER), **modules)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        pipe.save_pretrained(tmp)
        os.sync()
        save_s = time.monotonic() - t
    del pipe, modules
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        say(f"after the build this process holds {gib(torch.cuda.memory_allocated())} GiB allocated, "
            f"{gib(torch.cuda.memory_reserved())} GiB reserved on the GPU")
    (tmp / STAMP).write_text(stamp)
    os.rename(tmp, folder)
    size = folder_bytes(folder)
    say(f"saved {size / 1e9:.2f} GB in {save_s:.1f}s ({size / 1e9 / save_s:.2f} GB/s, synced to disk)")
    return {"reused": False, "build_seconds": round(build_s, 2), "save_seconds": round(save_s, 2),
            "bytes": size, "params": params}


def build_tiny(dest: Path) -> dict:
    import tiny_models

    t = time.monotonic()
    folder = tiny_models.build("wan-t2v", dest, name=MODEL_NAME["tiny"])
    return {"folder": str(folder), "build_seconds": round(time.monotonic() - t, 2), "save_seconds": None,
            "note": "tiny_models.build: build and save together", "bytes": folder_bytes(folder)}


# -- the daemon ---------------------------------------------------------------------------------------
def api_queue(api: str) -> dict | None:
    try:
        with urllib.request.urlopen(api + "/api/v1/queue", timeout=10) as r:
            return json.loads(r.read())
    except Exception as exc:  # noqa: BLE001 - an API change must not lose the other figures
        return {"error": f"{type(exc).__name__}: {exc}"}


def job_events(path: Path, wall0: float) -> dict:
    """The job's log.jsonl events as seconds after the drop (first time each event appears)."""
    events: dict = {}
    try:
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                events.setdefault(e["event"], round(parse_ts(e["timestamp"]) - wall0, 4))
            except (ValueError, KeyError, TypeError):
                pass
    except OSError:
        pass
    return events


def parse_ts(s: str | None) -> float | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def run_daemon(args, folder: Path, size: dict, name: str) -> dict:
    workdir = Path(args.workdir)
    root = workdir / "spool"
    shutil.rmtree(root, ignore_errors=True)
    models = {name: {"path": str(folder), "kinds": ["text-to-video"], "dtype": args.dtype}}
    worker = "cuda:0" if args.device == "cuda" else "cpu"
    d = Daemon(root, host="gpu-bench", workers=[worker], log_dir=workdir,
               VIDSPOOL_MODELS=json.dumps(models), VIDSPOOL_REGISTRY__DIR=str(workdir / "no-models"))
    d.log_path.unlink(missing_ok=True)
    # tests/support.py sets PYTHONPATH to its plugins and the repo; keep ours (carried wheels).
    pythonpath = os.pathsep.join(p for p in [str(PLUGINS), str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    out: dict = {"worker": worker, "model_config": models[name], "jobs": []}
    t = time.monotonic()
    d.start(wait=False, env={"PYTHONPATH": pythonpath})
    try:
        d.wait_ready(timeout=300)
        out["ready_seconds"] = round(time.monotonic() - t, 2)
        say(f"daemon ready in {out['ready_seconds']}s (worker {worker}, api {d.api})")
        out["queue_before"] = api_queue(d.api)
        for i in range(1, args.jobs + 1):
            job_id = f"wan-{i}"
            # Job 2 is dropped as soon as job 1 shows completed (back to back: the worker may still
            # be tidying up after job 1); jobs 3.. after --gap seconds (an idle daemon, warm model).
            gap = args.gap if i >= 3 else 0.0
            time.sleep(gap)
            job = {"kind": "text-to-video", "model": name,
                   "params": {"prompt": PROMPT, **size, "seed": SEED, "fps": FPS}}
            running_seen = None
            steps_seen: dict[int, float] = {}
            wall0 = time.time()
            t0 = time.monotonic()
            drop_json(root / "inbox", job_id, job)
            deadline = t0 + args.job_timeout
            while True:
                doc = status(root, job_id)
                now = time.monotonic()
                if doc:
                    if running_seen is None and doc.get("state") == "running":
                        running_seen = now - t0
                    if doc.get("stage") == "denoising" and doc.get("step"):
                        steps_seen.setdefault(doc["step"], now - t0)
                    if doc.get("state") in ("completed", "failed", "canceled"):
                        break
                if now > deadline:
                    raise RuntimeError(f"job {job_id} not final after {args.job_timeout}s: {doc}\n{d.log()}")
                time.sleep(args.poll)
            wall = now - t0
            if doc["state"] != "completed":
                raise RuntimeError(f"job {job_id} {doc['state']}: {json.dumps(doc.get('error'))}\n{d.log()}")
            result = doc.get("result") or {}
            started, finished = parse_ts(doc.get("started_at")), parse_ts(doc.get("finished_at"))
            video = next((f for f in result.get("files", []) if f["name"] == "video.mp4"), {})
            queue = api_queue(d.api)
            dev = (queue.get("devices") or [{}])[0] if isinstance(queue, dict) else {}
            rec = {
                "job": job_id,
                "gap_before_seconds": gap,
                "wall_seconds": round(wall, 4),
                "running_seen_seconds": rnd(running_seen),
                "pickup_seconds": rnd(started - wall0 if started else None),  # drop -> started_at
                "finish_to_seen_seconds": rnd(wall0 + wall - finished if finished else None),
                "seconds": result.get("seconds"),
                "seconds_per_step": result.get("seconds_per_step"),
                "model": result.get("model"),
                "params": result.get("params"),
                "video": result.get("video"),
                "video_sha256": video.get("sha256"),
                "status_steps_seen": steps_seen,
                "events": job_events(root / "outbox" / job_id / "log.jsonl", wall0),
                "worker": {k: dev.get(k) for k in ("model_loads", "models", "memory", "models_bytes", "jobs_done")},
            }
            out["jobs"].append(rec)
            m = rec["model"] or {}
            mem = (rec["worker"].get("memory") or {})
            say(f"job {i}: wall {wall:.3f}s, run {(rec['seconds'] or {}).get('run')}s, "
                f"loaded={m.get('loaded')} load_seconds={m.get('load_seconds')}, "
                f"s/step {rec['seconds_per_step']}, model_loads {rec['worker'].get('model_loads')}, "
                f"peak_allocated {gib(mem.get('peak_allocated'))} GiB, used {gib(mem.get('used'))} GiB")
    finally:
        try:
            d.stop(timeout=120)
        except AssertionError:
            d.kill()
        out["log_tail"] = d.log()[-3000:]
    return out


# -- directly through diffusers -----------------------------------------------------------------------
class _Ctx:
    """What write_video_results needs of a JobContext: output paths, meta, publish."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta: dict = {}

    def output_path(self, name: str) -> Path:
        return self.folder / name

    def publish(self, name: str) -> None:
        pass


def run_direct(args, folder: Path, size: dict) -> dict:
    import torch
    from diffusers import WanPipeline

    from pipeline.diffusion import to_uint8_frames
    from pipeline.kinds.video_generation import write_video_results
    from pipeline.models.resident import quiet_libraries

    quiet_libraries()  # as the worker: no diffusers/transformers progress bars
    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype)
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.monotonic()
    pipe = WanPipeline.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    read_s = time.monotonic() - t
    pipe.to("cuda" if cuda else "cpu")
    sync(args.device)
    load_s = time.monotonic() - t
    pipe.set_progress_bar_config(disable=True)
    say(f"direct: loaded in {load_s:.2f}s (from_pretrained {read_s:.2f}s)")
    out: dict = {"load_seconds": round(load_s, 3), "from_pretrained_seconds": round(read_s, 3), "runs": []}
    if cuda:
        out["memory_after_load_allocated"] = torch.cuda.memory_allocated()
    kwargs = {"prompt": PROMPT, **size}

    def call(pipe, i: int, synced: bool) -> dict:
        stamps: list[float] = []

        def on_step_end(pipeline, index, timestep, tensors):
            if synced:
                sync(args.device)
            stamps.append(time.monotonic())
            return tensors

        outdir = Path(args.workdir) / "direct" / f"run-{i}"
        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir(parents=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync(args.device)
        t0 = time.monotonic()
        result = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
                      callback_on_step_end=on_step_end)
        t1 = time.monotonic()  # output_type="np": the frames are on the host, the GPU is done
        frames = to_uint8_frames(result.frames)
        ctx = _Ctx(outdir)
        write_video_results(ctx, frames, FPS)
        t2 = time.monotonic()
        rec = {
            "run": i,
            "synced_steps": synced,
            "pipe_seconds": round(t1 - t0, 4),
            "frames_and_encode_seconds": round(t2 - t1, 4),
            "total_seconds": round(t2 - t0, 4),
            "first_step_seconds": round(stamps[0] - t0, 4) if stamps else None,
            "after_last_step_seconds": round(t1 - stamps[-1], 4) if stamps else None,  # decode
            "seconds_per_step": round((stamps[-1] - stamps[0]) / (len(stamps) - 1), 4) if len(stamps) > 1 else None,
            "step_seconds": [round(b - a, 4) for a, b in zip(stamps, stamps[1:])],
            "video": ctx.meta.get("video"),
            "video_sha256": file_sha256(outdir / "video.mp4"),
        }
        if cuda:
            rec["peak_allocated"] = torch.cuda.max_memory_allocated()
            rec["peak_reserved"] = torch.cuda.max_memory_reserved()
        del result, frames
        say(f"direct run {i}{' (synced steps)' if synced else ''}: pipe {rec['pipe_seconds']:.3f}s, "
            f"total {rec['total_seconds']:.3f}s, s/step {rec['seconds_per_step']}"
            + (f", peak {gib(rec['peak_allocated'])} GiB" if cuda else ""))
        return rec

    for i in range(1, args.direct_runs + 1):
        out["runs"].append(call(pipe, i, synced=False))
    if args.synced_run and time.monotonic() - T0 < args.deadline:
        out["runs"].append(call(pipe, args.direct_runs + 1, synced=True))
    if cuda:
        # Peak over the whole direct phase (load and every call): per-call peaks reset it, so take the max.
        out["peak_allocated"] = max([r["peak_allocated"] for r in out["runs"]] + [out["memory_after_load_allocated"]])
        free, total = torch.cuda.mem_get_info()
        out["used_after_runs"] = total - free
    out["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del pipe
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


# -- summary -------------------------------------------------------------------------------------------
def summarize(fig: dict) -> dict:
    daemon, direct = fig.get("daemon") or {}, fig.get("direct") or {}
    jobs = daemon.get("jobs") or []
    warm = jobs[1:]
    idle = jobs[2:] or warm  # warm jobs dropped into an idle daemon (after --gap)
    timed = [r for r in direct.get("runs", []) if not r["synced_steps"]][1:]  # the first is the warm-up
    synced = [r for r in direct.get("runs", []) if r["synced_steps"]]
    s: dict = {}
    s["daemon_cold_wall_seconds"] = jobs[0]["wall_seconds"] if jobs else None
    s["daemon_cold_load_seconds"] = ((jobs[0].get("model") or {}).get("load_seconds")) if jobs else None
    s["daemon_warm_jobs_measured"] = [j["job"] for j in idle]
    s["daemon_warm_wall_seconds"] = median([j["wall_seconds"] for j in idle])
    s["daemon_back_to_back_wall_seconds"] = jobs[1]["wall_seconds"] if len(jobs) > 2 else None
    s["daemon_warm_run_seconds"] = median([(j["seconds"] or {}).get("run") for j in idle if j.get("seconds")])
    s["daemon_warm_denoise_and_decode_seconds"] = median(
        [(j["seconds"] or {}).get("denoise_and_decode") for j in idle if j.get("seconds")])
    s["daemon_warm_encode_seconds"] = median([(j["seconds"] or {}).get("encode") for j in idle if j.get("seconds")])
    s["daemon_warm_seconds_per_step"] = median([j["seconds_per_step"] for j in idle if j.get("seconds_per_step")])
    s["daemon_warm_pickup_seconds"] = median([j["pickup_seconds"] for j in idle if j.get("pickup_seconds") is not None])
    # job.started (daemon hands the job over) -> generation.start (the worker calls the pipeline)
    s["daemon_warm_start_to_generation_seconds"] = median(
        [j["events"]["generation.start"] - j["events"]["job.started"] for j in idle
         if "generation.start" in j.get("events", {}) and "job.started" in j.get("events", {})])
    s["warm_jobs_loaded"] = [(j.get("model") or {}).get("loaded") for j in warm]
    s["warm_jobs_load_seconds"] = [(j.get("model") or {}).get("load_seconds") for j in warm]
    s["warm_jobs_load_model_lookup_seconds"] = [(j.get("seconds") or {}).get("load_model") for j in warm]
    s["worker_model_loads"] = (jobs[-1]["worker"].get("model_loads")) if jobs else None
    mem = (jobs[-1]["worker"].get("memory") or {}) if jobs else {}
    s["daemon_peak_allocated_gib"] = gib(mem.get("peak_allocated"))
    s["daemon_used_gib"] = gib(mem.get("used"))
    s["direct_load_seconds"] = direct.get("load_seconds")
    s["direct_warm_total_seconds"] = median([r["total_seconds"] for r in timed])
    s["direct_warm_pipe_seconds"] = median([r["pipe_seconds"] for r in timed])
    s["direct_warm_encode_seconds"] = median([r["frames_and_encode_seconds"] for r in timed])
    s["direct_seconds_per_step"] = median([r["seconds_per_step"] for r in timed if r["seconds_per_step"]])
    steps = [x for r in synced for x in r["step_seconds"]]
    s["direct_synced_seconds_per_step_median"] = median(steps)
    s["direct_peak_allocated_gib"] = gib(direct.get("peak_allocated"))
    s["direct_call_peak_allocated_gib"] = gib(max((r["peak_allocated"] for r in timed), default=None)) if timed and "peak_allocated" in timed[0] else None
    s["direct_max_rss_gib"] = gib(direct.get("max_rss"))
    if s["daemon_warm_wall_seconds"] and s["direct_warm_total_seconds"]:
        s["ratio_total"] = round(s["daemon_warm_wall_seconds"] / s["direct_warm_total_seconds"], 4)
    if s["daemon_back_to_back_wall_seconds"] and s["direct_warm_total_seconds"]:
        s["ratio_total_back_to_back"] = round(s["daemon_back_to_back_wall_seconds"] / s["direct_warm_total_seconds"], 4)
    if s["daemon_warm_denoise_and_decode_seconds"] and s["direct_warm_pipe_seconds"]:
        s["ratio_denoise"] = round(s["daemon_warm_denoise_and_decode_seconds"] / s["direct_warm_pipe_seconds"], 4)
    if s["daemon_warm_run_seconds"] and s["direct_warm_total_seconds"]:
        s["ratio_in_worker"] = round(s["daemon_warm_run_seconds"] / s["direct_warm_total_seconds"], 4)
    d_sha = {j.get("video_sha256") for j in jobs}
    x_sha = {r.get("video_sha256") for r in direct.get("runs", [])}
    s["same_output"] = (len(d_sha | x_sha) == 1) if jobs and direct.get("runs") else None
    s["distinct_videos"] = len(d_sha | x_sha)
    s["meets_ratio_target"] = (s.get("ratio_total") or 99) <= TARGETS["ratio_total_max"]
    s["meets_load_target"] = bool(warm) and all(x is False for x in s["warm_jobs_loaded"]) and all(
        (x or 0) == 0 for x in s["warm_jobs_load_seconds"])
    return s


def table(fig: dict) -> str:
    s = fig.get("summary") or {}
    size = fig.get("size") or {}

    def f(x, unit="", n=3):
        if x is None:
            return "-"
        if isinstance(x, float):
            return f"{x:.{n}f}{unit}"
        return f"{x}{unit}"

    rows = [
        ("model", f"{fig.get('model_name')} ({fig.get('scale')}{', %s layers' % fig['layers'] if fig.get('layers') else ''}), "
                  f"{size.get('width')}x{size.get('height')}, "
                  f"{size.get('num_frames')} frames, {size.get('num_inference_steps')} steps, {fig.get('dtype')}, {fig.get('device')}"),
        ("folder build / save", f"{f((fig.get('build') or {}).get('build_seconds'), ' s', 1)} / "
                                f"{f((fig.get('build') or {}).get('save_seconds'), ' s', 1)}"
                                f" ({f(((fig.get('build') or {}).get('bytes') or 0) / 1e9, ' GB', 2)})"),
        ("daemon job 1 (cold) wall", f(s.get("daemon_cold_wall_seconds"), " s")),
        ("  its model load", f(s.get("daemon_cold_load_seconds"), " s")),
        ("daemon warm wall (idle, median)", f"{f(s.get('daemon_warm_wall_seconds'), ' s')}  {s.get('daemon_warm_jobs_measured')}"),
        ("daemon warm wall back to back", f(s.get("daemon_back_to_back_wall_seconds"), " s")),
        ("  run / denoise+decode / encode", f"{f(s.get('daemon_warm_run_seconds'), ' s')} / "
                                            f"{f(s.get('daemon_warm_denoise_and_decode_seconds'), ' s')} / "
                                            f"{f(s.get('daemon_warm_encode_seconds'), ' s')}"),
        ("  pickup (drop -> started_at)", f(s.get("daemon_warm_pickup_seconds"), " s")),
        ("  job.started -> generation.start", f(s.get("daemon_warm_start_to_generation_seconds"), " s")),
        ("direct load", f(s.get("direct_load_seconds"), " s")),
        ("direct warm total (median)", f(s.get("direct_warm_total_seconds"), " s")),
        ("  pipe() / frames+encode", f"{f(s.get('direct_warm_pipe_seconds'), ' s')} / "
                                     f"{f(s.get('direct_warm_encode_seconds'), ' s')}"),
        ("seconds/step daemon / direct", f"{f(s.get('daemon_warm_seconds_per_step'), '', 4)} / "
                                         f"{f(s.get('direct_seconds_per_step'), '', 4)} "
                                         f"(synced {f(s.get('direct_synced_seconds_per_step_median'), '', 4)})"),
        ("RATIO daemon/direct total", f"{f(s.get('ratio_total'), '', 4)}  (target <= {TARGETS['ratio_total_max']})"),
        ("ratio back to back", f(s.get("ratio_total_back_to_back"), "", 4)),
        ("ratio denoise+decode", f(s.get("ratio_denoise"), "", 4)),
        ("ratio in-worker run/direct", f(s.get("ratio_in_worker"), "", 4)),
        ("warm jobs: loaded / load s", f"{s.get('warm_jobs_loaded')} / {s.get('warm_jobs_load_seconds')}  (target: false / 0)"),
        ("worker model_loads", f(s.get("worker_model_loads"))),
        ("peak GPU alloc daemon / direct", f"{f(s.get('daemon_peak_allocated_gib'), ' GiB', 2)} / "
                                           f"{f(s.get('direct_peak_allocated_gib'), ' GiB', 2)} "
                                           f"(one call {f(s.get('direct_call_peak_allocated_gib'), ' GiB', 2)})"),
        ("daemon device memory used", f(s.get("daemon_used_gib"), " GiB", 2)),
        ("same video (sha256)", f"{s.get('same_output')} ({s.get('distinct_videos')} distinct)"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a.ljust(width)}  {b}" for a, b in rows)


def count_only() -> int:
    t = time.monotonic()
    params = count_params(full_components("meta"))
    print(json.dumps({"params": params, "total": sum(params.values()), "seconds": round(time.monotonic() - t, 2),
                      "expected": EXPECTED_PARAMS, "match": params == EXPECTED_PARAMS}, indent=1))
    return 0 if params == EXPECTED_PARAMS else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("full", "tiny"), default="full")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "gpu_wan.json")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vidspool-gpu-wan"))
    ap.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    ap.add_argument("--jobs", type=int, default=4, help="daemon jobs, one at a time (the first is cold)")
    ap.add_argument("--direct-runs", type=int, default=3, help="direct calls (the first is the warm-up)")
    ap.add_argument("--no-synced-run", dest="synced_run", action="store_false",
                    help="skip the extra direct call with a GPU sync per step")
    ap.add_argument("--job-timeout", type=float, default=300)
    ap.add_argument("--poll", type=float, default=0.005, help="status.json poll interval while a daemon job runs")
    ap.add_argument("--gap", type=float, default=2.0, help="idle seconds before daemon jobs 3.. (job 2 is back to back)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before the daemon starts, so job 1 reads the model from disk (root)")
    ap.add_argument("--deadline", type=float, default=480, help="skip the synced run past this many seconds")
    ap.add_argument("--transformer-dtype", choices=("float32", "bfloat16"), default="float32",
                    help="how the full build saves the transformer (published: float32)")
    ap.add_argument("--layers", type=int, default=None,
                    help="full scale: cut transformer and encoder depth to N layers (checks on small machines)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--count-params", action="store_true", help="count the full model's parameters on the meta device and exit")
    args = ap.parse_args()
    if args.count_params:
        return count_only()
    if args.jobs < 2 or args.direct_runs < 2:
        ap.error("--jobs and --direct-runs need at least 2 (the first of each is cold / warm-up)")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    size = dict(SIZES[args.scale])
    for key, value in (("width", args.width), ("height", args.height), ("num_frames", args.frames),
                       ("num_inference_steps", args.steps)):
        if value:
            size[key] = value
    name = MODEL_NAME[args.scale]
    fig: dict = {"scale": args.scale, "device": args.device, "dtype": args.dtype, "model_name": name, "size": size,
                 "layers": args.layers, "transformer_saved_as": args.transformer_dtype if args.scale == "full" else None,
                 "prompt": PROMPT, "seed": SEED, "fps": FPS, "targets": TARGETS, "started": time.time()}
    fig["environment"] = environment(args.device)
    say("environment: " + ", ".join(f"{k} {v}" for k, v in fig["environment"].items() if k != "argv"))

    def save() -> None:
        fig["elapsed_seconds"] = round(time.monotonic() - T0, 1)
        if fig.get("daemon") or fig.get("direct"):
            fig["summary"] = summarize(fig)
        args.out.write_text(json.dumps(fig, indent=1, default=str))

    rc = 0
    try:
        if args.scale == "full":
            folder = args.workdir / "models" / name
            fig["build"] = build_full(folder, args.device, args.layers, args.transformer_dtype)
        else:
            fig["build"] = build_tiny(args.workdir / "models")
            folder = Path(fig["build"]["folder"])
        fig["folder"] = str(folder)
        save()
        if args.drop_caches:
            os.sync()
            try:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                fig["page_cache_dropped"] = True
                say("page cache dropped: job 1 reads the model from disk")
            except OSError as exc:
                fig["page_cache_dropped"] = f"failed: {exc}"
                say(f"could not drop the page cache ({exc}); job 1 reads the model from the page cache")
        fig["daemon"] = run_daemon(args, folder, size, name)
        save()
        fig["direct"] = run_direct(args, folder, size)
        save()
    except BaseException as exc:  # noqa: BLE001 - keep what was measured
        fig["error"] = f"{type(exc).__name__}: {exc}"
        fig["traceback"] = traceback.format_exc()
        print(fig["traceback"], file=sys.stderr, flush=True)
        rc = 1
    save()
    print()
    print(table(fig))
    print(f"\nfigures: {args.out}  (elapsed {fig['elapsed_seconds']} s)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
