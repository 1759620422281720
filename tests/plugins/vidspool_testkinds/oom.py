"""A WanPipeline that runs out of GPU memory in its second denoising step.

Named in a test's registry as `pipeline = "vidspool_testkinds.oom:OutOfMemoryWanPipeline"`:
the real loader, the real pipeline and torch's own OutOfMemoryError, raised from the step
callback where a real allocation failure would surface.
"""

import functools

import torch
from diffusers import WanPipeline


class OutOfMemoryWanPipeline(WanPipeline):
    @functools.wraps(WanPipeline.__call__)
    def __call__(self, *args, callback_on_step_end=None, **kwargs):
        def step_end(pipe, index, timestep, tensors):
            if callback_on_step_end is not None:
                tensors = callback_on_step_end(pipe, index, timestep, tensors)
            if index + 1 >= 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated by the test)")
            return tensors

        return super().__call__(*args, callback_on_step_end=step_end, **kwargs)
