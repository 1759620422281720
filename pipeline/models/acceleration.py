"""Applies `[models.NAME] accelerate` to a loaded pipeline, and says per job what ran.

- attention: diffusers' `set_attention_backend` on the denoiser, then a probe call of that
  backend on the worker's device at the pipeline's dtype: a backend this host cannot run fails
  the load (`model_load_failed` naming it), never a silent fallback at the first job.
- cache: diffusers' cache hooks (`enable_cache`) with the configured parameters. A job with
  `params.quality = "exact"` runs with them off (`disable_cache`) and on again afterwards.
- compile: `compile_repeated_blocks(fullgraph=True)` (regional) or `torch.compile` of the whole
  denoiser (full), with automatic dynamic shapes: the warm-up size compiles static; the
  first other size recompiles once with dynamic sizes, which then serve every size
  (docs/acceleration.md). The warm-up runs at the size of the job that loads the model
  (else at its configured `defaults`); one at a size no job asked for that fails is logged
  and the first job's own call compiles instead. Inductor's caches live in a folder per
  model, torch version and device, so a restarted worker finds its compiled code on disk.

Every job counts the denoiser's work (SkipCounter): how many of its blocks ran, per call, so
`result.accelerate` reports the blocks a cache skipped (0 without one). It also reports the
denoiser's weights as stored (bytes per dtype: what quantize or layerwise_casting made of
them) and, with a configured attention backend, how often that backend ran in the job
(BackendCalls): the proof that nothing fell back to the default.
"""

from __future__ import annotations

import inspect
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from contract.acceleration import Accelerate, attention_problem, options_of
from contract.errors import ErrorCode, JobError

WARM_UP_STEPS = 2


def denoiser_of(pipe):
    return getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)


def repeated_blocks(denoiser) -> list:
    """The denoiser's repeated transformer blocks, in order (the classes it names in
    `_repeated_blocks`, which regional compile compiles too)."""
    names = set(getattr(denoiser, "_repeated_blocks", None) or ())
    return [module for module in denoiser.modules() if type(module).__name__ in names]


class SkipCounter:
    """Counts, per denoiser call, the Linear layers each repeated block ran.

    A block whose layers did not run was skipped (first-block cache, MagCache); layers that
    did not run inside a running block were reused (PAB's attention, TaylorSeer's predictions)."""

    def __init__(self, denoiser):
        import torch

        self.blocks = [[m for m in block.modules() if isinstance(m, torch.nn.Linear)] for block in repeated_blocks(denoiser)]
        self.per_block = [len(linears) for linears in self.blocks]
        self._ran = [0] * len(self.blocks)
        self.handles = [denoiser.register_forward_pre_hook(self._call_starts),
                        denoiser.register_forward_hook(self._call_ends)]
        for index, linears in enumerate(self.blocks):
            for linear in linears:
                self.handles.append(linear.register_forward_pre_hook(self._ran_in(index)))
        self.reset()

    def _ran_in(self, index: int):
        def hook(module, args):
            self._ran[index] += 1
        return hook

    def _call_starts(self, module, args):
        self._ran = [0] * len(self.blocks)

    def _call_ends(self, module, args, output):
        self.calls += 1
        for ran, total in zip(self._ran, self.per_block):
            self.blocks_run += 1 if ran else 0
            self.layers_run += min(ran, total)
        self.blocks_total += len(self.blocks)
        self.layers_total += sum(self.per_block)

    def reset(self) -> None:
        self.calls = self.blocks_run = self.blocks_total = self.layers_run = self.layers_total = 0

    def report(self) -> dict:
        return {"denoiser_calls": self.calls, "blocks_skipped": self.blocks_total - self.blocks_run,
                "blocks_total": self.blocks_total,
                "layers_skipped_share": round(1 - self.layers_run / self.layers_total, 4) if self.layers_total else 0.0}


def stored_weights(denoiser) -> dict:
    """The denoiser's parameters as stored: bytes per dtype and in all. A tensor subclass
    (torchao's quantized weights) is opened down to the tensors that hold its data, so int8
    data and its float scales count as what they are."""
    per_dtype: dict[str, int] = {}

    def add(tensor) -> None:
        if hasattr(tensor, "__tensor_flatten__"):
            for name in tensor.__tensor_flatten__()[0]:
                add(getattr(tensor, name))
            return
        dtype = str(tensor.dtype).removeprefix("torch.")
        per_dtype[dtype] = per_dtype.get(dtype, 0) + tensor.numel() * tensor.element_size()

    for parameter in denoiser.parameters():
        add(parameter)
    return {"bytes": sum(per_dtype.values()), "dtypes": per_dtype}


class BackendCalls:
    """Counts the calls of one attention backend in diffusers' registry of this worker (the
    registered function is wrapped once; every model set to that backend shares the count)."""

    def __init__(self, backend: str):
        from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

        name = AttentionBackendName(backend)
        registered = _AttentionBackendRegistry._backends[name]
        if not hasattr(registered, "vidspool_calls"):
            original, calls = registered, [0]

            def counted(**kwargs):
                calls[0] += 1
                return original(**kwargs)

            counted.vidspool_calls = calls
            _AttentionBackendRegistry._backends[name] = registered = counted
        self.calls = registered.vidspool_calls

    def count(self) -> int:
        return self.calls[0]


@dataclass
class Accelerated:
    """What was applied to one loaded model; `job()` wraps one call of it."""

    options: Accelerate
    denoiser: object
    counter: SkipCounter | None
    cache_config: object | None = None
    make_cache: object | None = None  # steps → the diffusers cache config
    compiled: dict = field(default_factory=dict)
    running: list = field(default_factory=list)  # the pipeline now calling (PAB's timestep)
    weights: dict = field(default_factory=dict)  # stored_weights() once the options are applied
    attention_calls: BackendCalls | None = None

    @contextmanager
    def job(self, pipe, exact: bool, steps: int):
        """Runs one call of `steps` steps with the model's options (caches off when `exact`);
        yields the report, complete once the call is over."""
        cache = self.options.cache
        if cache is not None and cache.kind == "magcache" and steps != self.cache_config.num_inference_steps:
            self.denoiser.disable_cache()
            self.cache_config = self.make_cache(steps)
            self.denoiser.enable_cache(self.cache_config)
        report: dict = {"quality": "exact" if exact else "default", "compile": self.options.compile,
                        "attention": self.options.attention, "cache": None,
                        "quantize": self.options.quantize, "layerwise_casting": self.options.layerwise_casting}
        if self.compiled:
            report["compiled"] = dict(self.compiled)
        report["weights"] = dict(self.weights)
        calls_before = self.attention_calls.count() if self.attention_calls else 0
        if cache is not None and exact:
            self.denoiser.disable_cache()
        if self.counter is not None:
            self.counter.reset()
        self.running[:] = [pipe]
        try:
            yield report
        finally:
            self.running.clear()
            if self.attention_calls is not None:
                report["attention_calls"] = self.attention_calls.count() - calls_before
            if cache is not None:
                report["cache"] = {**cache.model_dump(exclude={"mag_ratios"}), "on": not exact}
                if self.counter is not None:
                    report["cache"].update(self.counter.report())
                if exact:
                    self.denoiser.enable_cache(self.cache_config)


def accelerate(pipe, name: str, config: dict, device: str, dtype, compile_root: Path | None,
               on_load=None, warm_size: dict | None = None, log=None) -> Accelerated:
    """Applies the model's options to a freshly loaded `pipe`; `warm_size` is the size
    (width, height, num_frames) of the job it is loaded for, None for a load for no job."""
    options = options_of(config)
    denoiser = denoiser_of(pipe)
    if denoiser is None:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"model {name!r}: accelerate needs a transformer or UNet; "
                       f"{type(pipe).__name__} has neither")
    where = f"model {name!r} ({type(denoiser).__name__})"
    accelerated = Accelerated(options, denoiser, None)
    if options.attention != "default":
        _set_attention(denoiser, options.attention, where, device, dtype)
        accelerated.attention_calls = BackendCalls(options.attention)
    if options.shrinks_weights:
        _shrink(denoiser, options, where, dtype)
    accelerated.weights = stored_weights(denoiser)
    if options.cache is not None:
        default_steps = (config.get("defaults") or {}).get("num_inference_steps") or 50
        accelerated.make_cache = lambda steps: _cache_config(options, denoiser, where, accelerated.running, steps)
        accelerated.cache_config = accelerated.make_cache(default_steps)
        denoiser.enable_cache(accelerated.cache_config)
        accelerated.counter = SkipCounter(denoiser)
    if options.compile != "none":
        _start_compile(denoiser, options.compile, name, device, compile_root)
        accelerated.compiled = _warm_up(pipe, options.compile, name, config, where, warm_size, on_load, log)
    return accelerated


def _shrink(denoiser, options: Accelerate, where: str, dtype) -> None:
    import torch

    try:
        if options.layerwise_casting != "none":
            denoiser.enable_layerwise_casting(storage_dtype=getattr(torch, options.layerwise_casting), compute_dtype=dtype)
        else:
            from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

            quantize_(denoiser, Int8WeightOnlyConfig() if options.quantize == "int8_weight" else Float8WeightOnlyConfig())
    except Exception as exc:  # noqa: BLE001  (torchao and torch raise many kinds)
        key = "layerwise_casting" if options.layerwise_casting != "none" else "quantize"
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{where}: accelerate.{key}: {getattr(options, key)!r} failed: "
                       f"{type(exc).__name__}: {exc}") from exc


def _set_attention(denoiser, backend: str, where: str, device: str, dtype) -> None:
    import torch

    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, dispatch_attention_fn

    problem = attention_problem(backend)
    if problem is None:
        # set_attention_backend also makes it the process-wide default, which every other
        # model in this worker would then run: only this denoiser's processors keep it.
        others = _AttentionBackendRegistry._active_backend
        try:
            denoiser.set_attention_backend(backend)

            # (batch, tokens, heads, head_dim): a call this backend must run here.
            q = torch.randn(1, 64, 2, 64, device=device, dtype=dtype)
            dispatch_attention_fn(q, q, q, backend=AttentionBackendName(backend))
        except Exception as exc:  # noqa: BLE001  (diffusers and torch raise many kinds)
            problem = f"attention backend {backend!r} does not run on {device}: {type(exc).__name__}: {exc}"
        finally:
            _AttentionBackendRegistry.set_active_backend(others)
    if problem:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{where}: accelerate.attention: {problem}")


def _cache_config(options: Accelerate, denoiser, where: str, running: list, steps: int):
    from diffusers import CacheMixin, hooks

    cache = options.cache
    if not isinstance(denoiser, CacheMixin):
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{where}: accelerate.cache: {cache.kind!r} needs a denoiser with "
                       "diffusers' cache hooks; this one supports none")
    params = cache.model_dump(exclude={"kind"})
    blocks = len(repeated_blocks(denoiser))
    if cache.kind in ("first_block", "magcache") and blocks < 2:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{where}: accelerate.cache: {cache.kind!r} needs at least 2 "
                       f"transformer blocks (the first decides for the rest); this one has {blocks}")
    if cache.kind == "first_block":
        return hooks.FirstBlockCacheConfig(**params)
    if cache.kind == "taylorseer":
        import torch

        return hooks.TaylorSeerCacheConfig(**params, taylor_factors_dtype=torch.float32)
    if cache.kind == "pab":
        return hooks.PyramidAttentionBroadcastConfig(
            **params, current_timestep_callback=lambda: running[0].current_timestep if running else 0)
    if cache.mag_ratios is None:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{where}: accelerate.cache: magcache has no mag_ratios; "
                       "run `vidspool models calibrate NAME` (or set mag_ratios)")
    # MagCache spreads its ratios over the run's steps and ends its run by counting them: it
    # is made again for a job with another step count (Accelerated.job).
    return hooks.MagCacheConfig(**params, num_inference_steps=steps)


def compile_dir(root: Path, name: str, device: str) -> Path:
    """Inductor's cache folder for one model on one torch version and device kind."""
    import torch

    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability()
        kind = f"{torch.cuda.get_device_name().replace(' ', '-')}-sm{major}{minor}"
    else:
        kind = "cpu"
    return root / name / f"torch-{torch.__version__}" / kind


def _start_compile(denoiser, mode: str, name: str, device: str, root: Path | None) -> None:
    """Marks the denoiser (or its blocks) for torch.compile, with inductor's caches in the
    model's folder; the code is compiled at its first call."""
    if root is not None:
        folder = compile_dir(root, name, device)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # read by inductor at each cache access
    if mode == "regional":
        denoiser.compile_repeated_blocks(fullgraph=True)
    else:
        denoiser.compile(fullgraph=True)


def _warm_up(pipe, mode: str, name: str, config: dict, where: str, warm_size: dict | None, on_load, log) -> dict:
    """A short call that compiles the code: at the size of the job the model is loaded for
    (whose failure fails the load), else at the model's `defaults`, where a failure is
    logged and the first job's own call compiles instead (`compiled.warm_up_failed`)."""
    import torch
    from torch._dynamo.utils import counters

    call = warm_up_call(pipe, config, warm_size)
    sig = inspect.signature(type(pipe).__call__).parameters
    size = "x".join(str(call.get(k, sig[k].default)) for k in ("width", "height", "num_frames") if k in sig)
    if on_load:
        on_load(f"compiling {name} ({mode}): a warm-up call at {size}")
    before = dict(counters["inductor"])
    started = time.monotonic()
    out = {"mode": mode, "warm_up_size": size}
    try:
        with torch.inference_mode():
            pipe(**call)
    except Exception as exc:
        if warm_size is not None:  # the job's own size: it cannot run compiled
            if type(exc).__name__ == "OutOfMemoryError":
                raise
            raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{where}: accelerate.compile: {mode!r} failed at the "
                           f"warm-up call: {type(exc).__name__}: {str(exc)[:2000]}") from exc
        out["warm_up_failed"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    if "warm_up_failed" in out:
        _free_device_memory()  # the failed call's tensors, freed with its traceback
        if log:
            log("model.warm_up_failed", level="warning", model=name, size=size, error=out["warm_up_failed"],
                then="the first job's call compiles")
    hits = counters["inductor"].get("fxgraph_cache_hit", 0) - before.get("fxgraph_cache_hit", 0)
    misses = counters["inductor"].get("fxgraph_cache_miss", 0) - before.get("fxgraph_cache_miss", 0)
    return {**out, "warm_up_seconds": round(time.monotonic() - started, 3), "cache_hits": hits,
            "cache_misses": misses, "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}


def _free_device_memory() -> None:
    """What a failed call left on the GPU, freed for the jobs to come."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def warm_up_call(pipe, config: dict, size: dict | None = None) -> dict:
    """The pipeline's kwargs for a short call, without decoding, at `size` (width, height,
    num_frames of a job) if given, else at the model's default size (config defaults
    first, then the pipeline's own)."""
    sig = inspect.signature(type(pipe).__call__).parameters
    chosen = size if size is not None else config.get("defaults") or {}
    kwargs: dict = {"num_inference_steps": WARM_UP_STEPS}
    for key in ("width", "height", "num_frames", "guidance_scale"):
        if chosen.get(key) is not None and key in sig:
            kwargs[key] = chosen[key]
    if "prompt" in sig:
        kwargs["prompt"] = "warm-up"
    if "output_type" in sig:
        kwargs["output_type"] = "latent"
    if "image" in sig:
        from PIL import Image

        width = kwargs.get("width") or sig["width"].default
        height = kwargs.get("height") or sig["height"].default
        kwargs["image"] = Image.new("RGB", (width, height), (128, 128, 128))
    return kwargs
