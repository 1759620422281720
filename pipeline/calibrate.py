"""`vidspool models calibrate NAME`'s child process: MagCache's magnitude ratios of one model.

Reads {"name", "config", "steps", "device"} as JSON on stdin, loads the model as a worker
would (ModelStore, without accelerate options), runs one call of `steps` steps at its default
size, and prints {"mag_ratios", "steps", "seconds"} (or {"error"}) as the last stdout line.

The ratio of step t is MagCache's: the mean over tokens of |r_t| / |r_(t-1)|, where r is the
residual the transformer blocks add (last block's output − first block's input) in the
step's first (conditional) denoiser call; step 0 gets 1.0.
"""

from __future__ import annotations

import json
import sys
import time


def ratios_of(pipe, config: dict, steps: int) -> list[float]:
    import torch

    from pipeline.models.acceleration import denoiser_of, repeated_blocks, warm_up_call

    denoiser = denoiser_of(pipe)
    blocks = repeated_blocks(denoiser)
    if len(blocks) < 2:
        raise ValueError(f"{type(denoiser).__name__} has {len(blocks)} transformer blocks; MagCache needs 2 or more")
    seen = {"input": None, "first_of_step": True}
    residuals: list = []

    def block_in(module, args, kwargs):
        seen["input"] = kwargs.get("hidden_states", args[0] if args else None)

    def block_out(module, args, output):
        if seen["first_of_step"]:
            out = output[0] if isinstance(output, tuple) else output
            residuals.append((out - seen["input"]).float())
            seen["first_of_step"] = False

    def step_ends(pipeline, index, timestep, tensors):
        seen["first_of_step"] = True
        return tensors

    handles = [blocks[0].register_forward_pre_hook(block_in, with_kwargs=True),
               blocks[-1].register_forward_hook(block_out)]
    try:
        with torch.inference_mode():
            pipe(**{**warm_up_call(pipe, config), "num_inference_steps": steps}, callback_on_step_end=step_ends,
                 generator=torch.Generator("cpu").manual_seed(0))
    finally:
        for handle in handles:
            handle.remove()
    ratios = [1.0]
    for previous, current in zip(residuals, residuals[1:]):
        norms = torch.linalg.norm(current, dim=-1) / (torch.linalg.norm(previous, dim=-1) + 1e-8)
        ratios.append(round(float(norms.mean()), 5))
    return ratios


def main() -> None:
    request = json.loads(sys.stdin.read())
    from contract.errors import JobError
    from pipeline.models.resident import ModelStore

    started = time.monotonic()
    try:
        # The parent set CUDA_VISIBLE_DEVICES to the one GPU asked for: here it is GPU 0.
        store = ModelStore("cuda:0" if request["device"].startswith("cuda") else "cpu")
        resident, _ = store.ensure(request["name"], request["config"])
        ratios = ratios_of(resident.pipe, request["config"], request["steps"])
    except JobError as exc:
        print(json.dumps({"error": exc.message}))
        return
    except ValueError as exc:
        print(json.dumps({"error": f"model {request['name']!r}: {exc}"}))
        return
    print(json.dumps({"mag_ratios": ratios, "steps": request["steps"], "seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    main()
