"""WanPipelines that run out of GPU memory: in their second denoising step
(OutOfMemoryWanPipeline), or at any size over a small one (SmallGpuWanPipeline).

Named in a test's registry as `pipeline = "vidspool_testkinds.oom:OutOfMemoryWanPipeline"`:
the real loader, the real pipeline and torch's own OutOfMemoryError, raised from the step
callback (or the call) where a real allocation failure would surface.
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


class SmallGpuWanPipeline(WanPipeline):
    """Runs out of GPU memory above 128×128×17 frame pixels (a GPU with room for small
    videos only), so its own default size (832×480×81) cannot run here."""

    FITS = 128 * 128 * 17

    @functools.wraps(WanPipeline.__call__)
    def __call__(self, *args, height: int = 480, width: int = 832, num_frames: int = 81, **kwargs):
        if height * width * num_frames > self.FITS:
            raise torch.OutOfMemoryError(f"CUDA out of memory at {width}x{height}x{num_frames} (simulated by the test)")
        return super().__call__(*args, height=height, width=width, num_frames=num_frames, **kwargs)
