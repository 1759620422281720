"""Which devices this host has, found without importing torch."""

from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpus() -> list[dict]:
    """GPUs as nvidia-smi sees them (index, name, memory_total_mb); [] without a driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, name, mem = (p.strip() for p in line.split(",", 2))
        gpus.append({"index": int(index), "name": name, "memory_total_mb": int(float(mem))})
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        keep = {p.strip() for p in allowed.split(",") if p.strip()}
        gpus = [g for g in gpus if str(g["index"]) in keep]
    return gpus


def worker_devices(devices: str | list[str], cpu_workers: int) -> list[str]:
    """One name per worker: "cuda:N" for GPUs, "cpu:K" for CPU workers."""
    if devices == "auto":
        gpus = visible_gpus()
        wanted = [f"cuda:{g['index']}" for g in gpus] or ["cpu"] * cpu_workers
    else:
        wanted = list(devices)
    names, cpu = [], 0
    for d in wanted:
        if d == "cpu":
            names.append(f"cpu:{cpu}")
            cpu += 1
        else:
            names.append(d)
    return names


def worker_env(device: str) -> dict[str, str]:
    """Each worker sees only its own GPU (offload included)."""
    if device.startswith("cuda:"):
        return {"CUDA_VISIBLE_DEVICES": device.split(":", 1)[1]}
    return {"CUDA_VISIBLE_DEVICES": ""}
