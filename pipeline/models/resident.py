"""The models a worker keeps loaded: an LRU of diffusers pipelines (and lip-sync models,
pipeline/lipsync/) under a memory budget.

One entry per registry name. Its key includes the registry entry itself, so a model whose
config changed (SIGHUP) loads afresh. A kind whose class differs from the loaded one (e.g.
WanVideoToVideoPipeline for a WanPipeline folder) gets it from `from_pipe`: the same modules,
nothing loaded twice. `loads` counts real loads; the daemon shows it in /api/v1/queue.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import ErrorCode, JobError
from contract.lipsync_folders import BACKEND_CLASS
from contract.acceleration import Accelerate, dtype_table, exact_config, options_of
from contract.families import class_for, family_of
from contract.model_folders import lipsync_backend, model_folder, read_index, weights_bytes

GIB = 1 << 30


@dataclass
class Resident:
    name: str
    key: str
    folder: Path
    class_name: str
    pipe: object
    bytes: int
    load_seconds: float
    config: dict
    derived: dict[str, object] = field(default_factory=dict)
    last_used: float = field(default_factory=time.time)
    latent_rgb: object | None = None  # the live previews' map (pipeline/preview.py), fitted on first use
    accelerated: object | None = None  # pipeline/models/acceleration.py Accelerated, when configured


def quiet_libraries() -> None:
    """No progress bars from diffusers or transformers in the worker's log."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def warm_imports() -> None:
    """Imports torch and diffusers ahead of the first job (seconds a model job need not wait)."""
    importlib.import_module("torch")
    quiet_libraries()


def pipeline_class(name: str, spec: str):
    """A diffusers pipeline class by name, or any class given as "module:Class"."""
    try:
        if ":" in spec:
            module, _, attr = spec.partition(":")
            return getattr(importlib.import_module(module), attr)
        import diffusers

        quiet_libraries()
        return getattr(diffusers, spec)
    except (ImportError, AttributeError) as exc:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"model {name!r}: unknown pipeline class {spec!r} ({exc})") from None


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def component_dtypes(config_dtype, class_name: str, device: str) -> dict:
    """from_pretrained's dtype table: the model's default, its family's recommendations
    (Wan2.1's VAE in float32), then the config's own table entries."""
    table = dtype_table(config_dtype)
    family = family_of(class_name)
    merged = {**dict(family.dtypes if family else ()), **table}
    return {component: torch_dtype(name, device) for component, name in {"default": "auto", **merged}.items()}


def ran_dtypes(pipe) -> dict[str, str]:
    """Each module component's dtype as loaded (for result.model.dtypes)."""
    import torch

    return {name: str(component.dtype).removeprefix("torch.") for name, component in pipe.components.items()
            if isinstance(component, torch.nn.Module) and hasattr(component, "dtype")}


def compile_root() -> Path:
    """Where compiled code is kept: $VIDSPOOL_COMPILE_CACHE, else ~/.cache/vidspool/compile."""
    if os.environ.get("VIDSPOOL_COMPILE_CACHE"):
        return Path(os.environ["VIDSPOOL_COMPILE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidspool" / "compile"


def module_bytes(pipe) -> int:
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for t in list(component.parameters()) + list(component.buffers()):
                total += t.numel() * t.element_size()
    return total


class ModelStore:
    def __init__(self, device: str, budget_gb: float | str = "auto"):
        self.device = device  # inside the worker: "cpu" or "cuda:0" (its only visible GPU)
        self.budget_gb = budget_gb
        self.loaded: OrderedDict[str, Resident] = OrderedDict()
        self.loads = 0

    # -- what is loaded --------------------------------------------------------
    def budget_bytes(self) -> int:
        if self.budget_gb != "auto":
            return int(float(self.budget_gb) * GIB)
        return int(self.memory()["total"] * (0.9 if self.device.startswith("cuda") else 0.25))

    def memory(self) -> dict:
        """Device memory: GPU memory of this worker's GPU, or RAM (used = this process)."""
        if self.device.startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info()
            return {"used": total - free, "total": total, "peak_allocated": torch.cuda.max_memory_allocated()}
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page
        return {"used": rss, "total": os.sysconf("SC_PHYS_PAGES") * page}

    def describe(self) -> dict:
        return {
            "models": [{"name": r.name, "class": r.class_name, "bytes": r.bytes, "load_seconds": round(r.load_seconds, 3)}
                       for r in reversed(self.loaded.values())],  # most recently used first
            "model_loads": self.loads,
            "models_bytes": sum(r.bytes for r in self.loaded.values()),
            "budget_bytes": self.budget_bytes() if self._can_measure() else None,
            "memory": self.memory() if self._can_measure() else None,
        }

    def _can_measure(self) -> bool:
        # A GPU is asked only once torch is in use: a worker that never ran a model stays light.
        return not self.device.startswith("cuda") or "torch" in sys.modules

    # -- loading ------------------------------------------------------------------
    def pipeline(self, name: str, config: dict, kind: str, on_load: Callable[[str], None] | None = None,
                 exact: bool = False, warm_size: dict | None = None, log: Callable[..., None] | None = None):
        """The pipeline that runs `kind` with model `name`: (pipe, resident, loaded_now).

        `exact` (params.quality): a model whose weights are quantized or cast is served by a
        full-precision copy of its own, "NAME (exact)", kept warm like any other model.
        `warm_size`: the job's width, height and num_frames, where a compiled model loaded
        for it warms up (pipeline/models/acceleration.py); `log(event, **fields)`."""
        if exact and options_of(config).shrinks_weights:
            name, config = f"{name} (exact)", exact_config(config)
        resident, loaded_now = self.ensure(name, config, on_load, warm_size, log)
        target = class_for(resident.class_name, kind) if not config.get("pipeline") else resident.class_name
        if target == type(resident.pipe).__name__:
            return resident.pipe, resident, loaded_now
        if target not in resident.derived:
            cls = pipeline_class(name, target)
            pipe = cls.from_pipe(resident.pipe)
            if config.get("offload", "none") != "none":
                self._place(pipe, config)
            pipe.set_progress_bar_config(disable=True)
            resident.derived[target] = pipe
        return resident.derived[target], resident, loaded_now

    def pipeline_class_for(self, name: str, config: dict, kind: str):
        """The class a job will run, without loading weights (for checks before loading)."""
        if config.get("pipeline"):
            return pipeline_class(name, config["pipeline"])
        index = read_index(name, model_folder(name, config))
        return pipeline_class(name, class_for(index["_class_name"], kind))

    def ensure(self, name: str, config: dict, on_load: Callable[[str], None] | None = None,
               warm_size: dict | None = None, log: Callable[..., None] | None = None) -> tuple[Resident, bool]:
        key = json.dumps(config, sort_keys=True, default=str)
        resident = self.loaded.get(name)
        if resident is not None and resident.key == key:
            self.loaded.move_to_end(name)
            resident.last_used = time.time()
            return resident, False
        if resident is not None:
            self.unload(name)  # its registry entry changed
        folder = model_folder(name, config)
        backend = lipsync_backend(name, folder, config)
        if backend is not None:  # a talking-head lip-sync model, not a diffusers folder
            from pipeline.lipsync.base import load as load_lipsync

            class_name = BACKEND_CLASS[backend]
            dtype_name = dtype_table(config.get("dtype", "auto")).get("default", "auto")
            dtype = None if dtype_name == "auto" else torch_dtype(dtype_name, self.device)

            def load():
                return load_lipsync(backend, folder, self.device, dtype), None
        else:
            index = read_index(name, folder)
            cls = pipeline_class(name, config.get("pipeline") or index["_class_name"])
            class_name = cls.__name__
            quiet_libraries()
            dtypes = component_dtypes(config.get("dtype", "auto"), index["_class_name"], self.device)

            def load():
                pipe = cls.from_pretrained(str(folder), dtype=dtypes, local_files_only=True)
                self._place(pipe, config)
                return pipe, self._accelerate(pipe, name, config, dtypes["default"], on_load, warm_size, log)
        self._make_room(weights_bytes(folder), keep=None)
        if on_load:
            on_load(f"loading {name} ({class_name}) from {folder}")
        started = time.monotonic()
        try:
            pipe, accelerated = load()
        except JobError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":
                raise
            raise JobError(ErrorCode.MODEL_LOAD_FAILED,
                           f"model {name!r}: loading {folder} as {class_name} failed: {type(exc).__name__}: {exc}") from exc
        resident = Resident(name, key, folder, class_name if backend else type(pipe).__name__, pipe, module_bytes(pipe),
                            time.monotonic() - started, config, accelerated=accelerated)
        self.loaded[name] = resident
        self.loads += 1
        self._make_room(0, keep=name)
        return resident, True

    def _accelerate(self, pipe, name: str, config: dict, dtype, on_load, warm_size: dict | None, log):
        if options_of(config) == Accelerate() and not config.get("exact_copy"):
            return None
        from pipeline.models.acceleration import accelerate

        return accelerate(pipe, name, config, self.device, dtype, compile_root(), on_load, warm_size, log)

    def _place(self, pipe, config: dict) -> None:
        offload = config.get("offload", "none")
        if offload != "none" and self.device.startswith("cuda"):
            # The worker sees only its own GPU (CUDA_VISIBLE_DEVICES), so it is GPU 0 here.
            if offload == "model":
                pipe.enable_model_cpu_offload(gpu_id=0)
            else:
                pipe.enable_sequential_cpu_offload(gpu_id=0)
        elif self.device != "cpu":  # from_pretrained loads onto the CPU already
            pipe.to(self.device)
        vae = getattr(pipe, "vae", None)
        if config.get("vae_tiling") and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if config.get("vae_slicing") and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        pipe.set_progress_bar_config(disable=True)

    def _make_room(self, need: int, keep: str | None) -> None:
        """Unloads least recently used models until `need` more bytes fit the budget."""
        budget = self.budget_bytes()
        while self.loaded:
            used = sum(r.bytes for r in self.loaded.values())
            if used + need <= budget:
                return
            oldest = next(iter(self.loaded))
            if oldest == keep:
                return  # the model just loaded stays, even alone over budget
            self.unload(oldest)

    def unload(self, name: str) -> bool:
        resident = self.loaded.pop(name, None)
        if resident is None:
            return False
        resident.derived.clear()
        resident.pipe = None
        del resident
        self.free_cache()
        return True

    def free_cache(self) -> None:
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
