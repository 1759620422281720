"""What a job kind declares: its params model, its inputs and its run function.

A kind is a plain module in pipeline/kinds/ (or a third-party module named by the
`vidspool.kinds` entry-point group) exposing `KIND = KindSpec(...)`. Kind modules must
import only light things (pydantic) at module level: the daemon imports them to validate
jobs and never loads torch. Heavy imports go inside `run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel


MediaType = Literal["image", "audio", "video", "text", "any"]


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("must be even (H.264 with yuv420p needs even dimensions)")
    return value


# A frame width or height of a kind that writes H.264 (yuv420p).
EvenSide = Annotated[int, AfterValidator(_even)]


@dataclass(frozen=True)
class InputSpec:
    name: str
    # image/audio/video: the file must be one of contract.input_formats' formats for them.
    media: tuple[MediaType, ...] = ("any",)
    many: bool = False
    required: bool = False


@dataclass(frozen=True)
class KindSpec:
    name: str
    params: type[BaseModel]
    run: Callable[[Any, BaseModel], None]  # (pipeline.context.JobContext, params); runs in a worker
    inputs: tuple[InputSpec, ...] = ()
    # The result a client gets from /download.
    main_result: str = "video.mp4"
    # Cross-field checks that need params and inputs together; raise ValueError(message).
    check: Callable[..., None] | None = None
    # The check also takes the host's voices: check(params, inputs, voices: contract.voices.VoiceBook).
    check_takes_voices: bool = False
    # frames × width × height a job will render, when params alone tell (checked against
    # [limits] max_frame_pixels before any work); kinds check later sizes with the context.
    frame_pixels: Callable[[BaseModel, Mapping[str, list[Path]]], int | None] | None = None
    description: str = ""
    # Runs a model from the registry: the job must name one (or its kind a default).
    needs_model: bool = False
    # May run a model without needing one (e.g. narrated-video for generated backgrounds).
    takes_model: bool = False
    # A params field that names the model, "none" meaning no model (talking-head: lipsync).
    model_param: str | None = None
    # The kinds whose registry models it runs (default: its own).
    model_kinds: tuple[str, ...] = ()
    # Params an input sets when the job leaves them out (video-to-video: the video's width
    # and height): kind, model and preset defaults never set them.
    sized_by_input: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def uses_model(self) -> bool:
        return self.needs_model or self.takes_model or self.model_param is not None

    def serves(self, model_kinds: list[str]) -> bool:
        """Whether a model registered for `model_kinds` (empty: any) can run this kind."""
        return not model_kinds or bool(set(self.model_kinds or (self.name,)) & set(model_kinds))

    def input_spec(self, name: str) -> InputSpec | None:
        return next((i for i in self.inputs if i.name == name), None)
