"""slideshow: title cards and images, one after another, with cuts or crossfades, and music.

Order: the title cards (`slides`) come first, in the order given, then the `images`, in the
order given; so a single slide works as the show's title card, and a job with only images or
only slides is simply those.

Timing: every slide gets `seconds_per_slide` on screen. When it is left out, the slides
share the length of the `audio` input equally, or get 3 seconds each when there is none.
The video lasts exactly slides × seconds_per_slide; the audio is trimmed or padded with
silence to that length and faded out at the end. A crossfade is centred on the boundary
between two slides and lasts `transition_seconds` (at most half a slide), so it does not
change the length.

Images are fitted inside the frame, keeping their aspect ratio, on the `background` colour.
Results: video.mp4 (H.264 + AAC when there is audio) and thumb.jpg (the first slide).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract.kinds import EvenSide, InputSpec, KindSpec
from pipeline.text_wrap import wrap_text

if TYPE_CHECKING:
    import numpy as np
    from PIL import ImageFont

    from pipeline.context import JobContext

DEFAULT_SECONDS_PER_SLIDE = 3.0
FONT_PATH = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
# How often the "rendering" stage reports; cancel itself is checked on every frame.
_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


class SlideshowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slides: list[str] = Field(default_factory=list, description="title-card texts, shown before the images")
    seconds_per_slide: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="seconds each slide is shown; default: the audio's length shared equally, else 3",
    )
    transition: Literal["cut", "crossfade"] = "crossfade"
    transition_seconds: float = Field(default=0.5, ge=0, le=10)
    width: EvenSide = Field(default=1280, ge=16, le=3840)
    height: EvenSide = Field(default=720, ge=16, le=3840)
    fps: int = Field(default=25, ge=1, le=60)
    background: str = Field(default="#000000", description="hex colour, #rgb or #rrggbb")
    text_color: str = Field(default="#ffffff", description="hex colour, #rgb or #rrggbb")

    @field_validator("background", "text_color")
    @classmethod
    def _hex_color(cls, value: str) -> str:
        if not _HEX_COLOR.fullmatch(value):
            raise ValueError(f"{value!r} is not a hex colour such as '#1a2b3c' or '#fff'")
        digits = value[1:].lower()
        return "#" + (digits if len(digits) == 6 else "".join(c * 2 for c in digits))


def check(params: SlideshowParams, inputs: Mapping[str, list[Path]]) -> None:
    if not params.slides and not inputs.get("images"):
        raise ValueError("slideshow needs input 'images' and/or params 'slides'")


def frame_pixels(params: SlideshowParams, inputs: Mapping[str, list[Path]]) -> int | None:
    """The video's frames × pixels, when known before the audio is read."""
    seconds = params.seconds_per_slide
    if seconds is None and inputs.get("audio"):
        return None  # the audio's length sets it: checked in run()
    slides = len(params.slides) + len(inputs.get("images") or [])
    frames = max(slides, round(slides * (seconds or DEFAULT_SECONDS_PER_SLIDE) * params.fps))
    return frames * params.width * params.height


def run(ctx: JobContext, params: SlideshowParams) -> None:
    from pipeline import media
    from pipeline.context import StepReporter

    images = ctx.input_list("images")
    audio_path = ctx.input("audio")
    slide_count = len(params.slides) + len(images)
    ctx.progress(0, stage="rendering", message="reading inputs")

    audio = None
    seconds_per_slide = params.seconds_per_slide
    if audio_path is not None:
        max_seconds = None if seconds_per_slide is None else seconds_per_slide * slide_count
        audio = media.load_audio(audio_path, max_seconds=max_seconds)
        if seconds_per_slide is None:
            seconds_per_slide = audio.shape[1] / media.AUDIO_RATE / slide_count
    if seconds_per_slide is None:
        seconds_per_slide = DEFAULT_SECONDS_PER_SLIDE

    # At least one frame per slide, even when a very short audio track sets the pace.
    total_frames = max(slide_count, round(slide_count * seconds_per_slide * params.fps))
    ctx.check_frame_budget(total_frames, params.width, params.height)
    frames_per_slide = total_frames / slide_count
    fade_frames = 0.0
    if params.transition == "crossfade":
        fade_frames = min(params.transition_seconds * params.fps, frames_per_slide / 2)

    def render_slide(index: int) -> np.ndarray:
        if index < len(params.slides):
            return render_title_card(
                params.slides[index], params.width, params.height, params.background, params.text_color
            )
        path = images[index - len(params.slides)]
        image = media.load_image(path, draft_size=(params.width, params.height))
        return media.fit_image(image, params.width, params.height, params.background)

    # Only the slides on screen are kept: a show of hundreds of photos stays small in memory.
    rendered: dict[int, np.ndarray] = {}

    def slide(index: int) -> np.ndarray:
        if index not in rendered:
            for old in [i for i in rendered if i < index - 1]:
                del rendered[old]
            rendered[index] = render_slide(index)
        return rendered[index]

    video_tmp = ctx.output_path("video.mp4")
    report = StepReporter(ctx)
    with media.Mp4Writer(video_tmp, params.width, params.height, params.fps, audio=audio) as writer:
        for frame_index in range(total_frames):
            current, following, weight = slides_at(frame_index, frames_per_slide, fade_frames, slide_count)
            frame = slide(current)
            if weight > 0:
                frame = blend(frame, slide(following), weight)
            writer.write(frame)
            done = frame_index + 1
            report(1 + 94 * done / total_frames, done, total_frames, "rendering", f"frame {done}/{total_frames}")
        ctx.progress(95, stage="encoding", message="finishing video.mp4")

    info = media.probe(video_tmp)
    ctx.meta["video"] = info["video"]
    ctx.meta["audio"] = info["audio"]
    media.write_thumb(render_slide(0), ctx.output_path("thumb.jpg"))
    ctx.publish("video.mp4")
    ctx.publish("thumb.jpg")


def slides_at(
    frame_index: int, frames_per_slide: float, fade_frames: float, slide_count: int
) -> tuple[int, int, float]:
    """Which slide a frame shows: (slide, next slide, weight of the next slide in 0..1).

    A crossfade of fade_frames is centred on each boundary between two slides.
    """
    position = frame_index + 0.5  # the frame's centre, so fades are symmetric
    current = min(int(position // frames_per_slide), slide_count - 1)
    boundary = round(position / frames_per_slide)
    if fade_frames > 0 and 1 <= boundary < slide_count:
        into_fade = position - (boundary * frames_per_slide - fade_frames / 2)
        if 0 <= into_fade < fade_frames:
            return boundary - 1, boundary, into_fade / fade_frames
    return current, current, 0.0


def blend(first: np.ndarray, second: np.ndarray, weight: float) -> np.ndarray:
    """Mix two uint8 frames: weight 0 is all first, 1 is all second."""
    import numpy as np

    mixed = first.astype(np.float32) * (1 - weight) + second.astype(np.float32) * weight
    return (mixed + 0.5).astype(np.uint8)


def render_title_card(text: str, width: int, height: int, background: str, color: str) -> np.ndarray:
    """Text centred on the background, word-wrapped, shrunk until it fits the frame."""
    import numpy as np
    from PIL import Image, ImageDraw

    card = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(card)
    max_width, max_height = width * 0.9, height * 0.9
    size = max(8, height // 10)
    while True:
        font = load_font(size)
        spacing = size // 4
        lines = "\n".join(wrap_text(draw, text, font, max_width))
        left, top, right, bottom = draw.multiline_textbbox(
            (0, 0), lines, font=font, spacing=spacing, align="center"
        )
        if (bottom - top <= max_height and right - left <= max_width) or size <= 8:
            break
        size = max(8, int(size * 0.85))
    draw.multiline_text(
        (width / 2, height / 2), lines, font=font, fill=color, anchor="mm", align="center", spacing=spacing
    )
    return np.asarray(card, dtype=np.uint8)


def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    try:
        return ImageFont.truetype(FONT_PATH, size)
    except OSError:  # fonts-dejavu-core missing: Pillow's built-in font still renders text
        return ImageFont.load_default(size)


KIND = KindSpec(
    name="slideshow",
    params=SlideshowParams,
    inputs=(InputSpec("images", media=("image",), many=True), InputSpec("audio", media=("audio",))),
    run=run,
    check=check,
    frame_pixels=frame_pixels,
    main_result="video.mp4",
    description="Title cards and images as a video, with cuts or crossfades and optional music.",
)
