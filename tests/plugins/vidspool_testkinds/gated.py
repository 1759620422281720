"""A WanPipeline that a test can hold at a point of its run, to read the status there.

Named in a test's registry as `pipeline = "vidspool_testkinds.gated:GatedWanPipeline"`; the
gates are files in $TEST_PIPELINE_GATES. While `step-1` exists the call waits before its
first step is reported (the status says step 0); while `decode` exists it waits after its
last step is reported (the status says decoding). Reaching a gate writes `<gate>.reached`.
Without the files it is the real pipeline, run as usual.
"""

import functools
import os
import time
from pathlib import Path

from diffusers import WanPipeline

GATE_SECONDS = 120  # a test that forgets its gate fails, it does not hang


def hold(gate: Path) -> None:
    if not gate.exists():
        return
    gate.with_name(gate.name + ".reached").touch()
    deadline = time.monotonic() + GATE_SECONDS
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


class GatedWanPipeline(WanPipeline):
    @functools.wraps(WanPipeline.__call__)
    def __call__(self, *args, callback_on_step_end=None, num_inference_steps=50, **kwargs):
        gates = Path(os.environ.get("TEST_PIPELINE_GATES", "/nonexistent"))

        def step_end(pipe, index, timestep, tensors):
            if index == 0:
                hold(gates / "step-1")
            if callback_on_step_end is not None:
                tensors = callback_on_step_end(pipe, index, timestep, tensors)
            if index + 1 == num_inference_steps:
                hold(gates / "decode")
            return tensors

        return super().__call__(*args, callback_on_step_end=step_end, num_inference_steps=num_inference_steps, **kwargs)
