"""Visualizr's `/api/v1/health` and `/api/v1/metrics` (seed 003), from the read model.

`gpu_info` lists the GPUs the workers run on: name, memory, utilization and temperature
from nvidia-smi (asked off the event loop, at most every few seconds), memory from the
worker where nvidia-smi is missing; on a CPU-only host `available: false, count: 0`. The
metrics are view.statistics() (measured from the outbox, so they include restarts and other
hosts' jobs) in the document's shape.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

from daemon import __version__
from daemon.http.compat.front import gpu_index, now_iso
from daemon.http.compat.visualizr.models import gb

GIB = 1 << 30
SMI_FIELDS = "index,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu"
SMI_EVERY_SECONDS = 5.0


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]" (MIG slices, some drivers)


def query_gpus() -> dict[int, dict]:
    """nvidia-smi's view of every GPU by index; {} without nvidia-smi or a driver."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    gpus = {}
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 7 or not parts[0].isdigit():
            continue
        total, used, free, util, temp = (number(p) for p in parts[2:])
        gpus[int(parts[0])] = {"name": parts[1], "memory_total_gb": total and round(total / 1024, 2),
                               "memory_used_gb": used and round(used / 1024, 2), "memory_free_gb": free and round(free / 1024, 2),
                               "utilization_percent": util, "temperature_celsius": temp}
    return gpus


class GpuInfo:
    """The document's gpu_info for the workers' devices, nvidia-smi asked at most every 5 s."""

    def __init__(self):
        self._smi: dict[int, dict] = {}
        self._asked = -SMI_EVERY_SECONDS
        self._lock = asyncio.Lock()

    async def smi(self, wanted: bool) -> dict[int, dict]:
        if not wanted:
            return {}
        async with self._lock:
            if time.monotonic() - self._asked >= SMI_EVERY_SECONDS:
                self._smi = await asyncio.get_running_loop().run_in_executor(None, query_gpus)
                self._asked = time.monotonic()
        return self._smi

    async def describe(self, devices: list[dict]) -> dict:
        gpus = [d for d in devices if gpu_index(d.get("device")) is not None]
        smi = await self.smi(bool(gpus))
        out = []
        for d in gpus:
            index = gpu_index(d["device"])
            memory = d.get("memory") or {}
            worker = {"memory_total_gb": round(memory["total"] / GIB, 2), "memory_used_gb": round(memory["used"] / GIB, 2),
                      "memory_free_gb": round((memory["total"] - memory["used"]) / GIB, 2)} if memory.get("total") else {}
            seen = smi.get(index) or {}
            out.append({"id": index, "name": seen.get("name"),
                        **{k: seen.get(k, worker.get(k)) for k in ("memory_total_gb", "memory_used_gb", "memory_free_gb")},
                        "utilization_percent": seen.get("utilization_percent"),
                        "temperature_celsius": seen.get("temperature_celsius"),
                        "worker_alive": bool(d.get("alive")), "busy": bool(d.get("busy"))})
        return {"available": bool(out), "count": len(out), "devices": out}


async def health(view, gpus: GpuInfo, uptime: float) -> dict:
    """The document's health answer; `status` "unhealthy" with the `reason` when the daemon
    has problems (no live worker, spool unavailable …)."""
    problems = view.problems()
    devices = view.devices()
    day = time.time() - time.time() % 86400  # UTC midnight
    out = {
        "status": "unhealthy" if problems else "healthy",
        "timestamp": now_iso(), "version": __version__, "uptime_seconds": round(uptime),
        "gpu_info": await gpus.describe(devices),
        # loaded_at: the workers do not report when they loaded a model (null).
        "loaded_models": [{"id": m["name"], "device": m["device"], "memory_usage_gb": gb(m["bytes"]), "loaded_at": None,
                           "load_seconds": m["load_seconds"]} for m in view.resident_models()],
        "queue_status": {"pending_requests": view.queued_count(),
                         "processing_requests": sum(1 for d in devices if d.get("busy")),
                         "completed_today": await view.off_loop(view.history.completed_since, day)},
    }
    if problems:
        out["reason"] = "; ".join(problems)
    return out


def metrics(stats: dict) -> dict:
    """view.statistics() in the document's /metrics shape."""
    req, gen, queue, storage = (stats.get(k) or {} for k in ("requests", "generation", "queue", "storage"))

    return {
        "requests": {k: req.get(k) for k in ("total", "today", "per_hour", "success_rate_percent")},
        "generation": {f"{k}_time_seconds": gen.get(f"{k}_seconds") for k in ("average", "median", "fastest", "slowest")},
        "queue": {"current_length": queue.get("current_length"), "max_length_today": queue.get("max_length_today"),
                  "average_wait_time_seconds": queue.get("average_wait_seconds")},
        "storage": {"total_videos": storage.get("total_videos"), "total_size_gb": gb(storage.get("total_bytes")),
                    "available_space_gb": gb(storage.get("available_bytes"))},
        "models": stats.get("models") or {},
    }
