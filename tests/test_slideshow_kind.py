"""The slideshow kind, run directly with a real JobContext on real files, checked with ffprobe."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import threading
import wave
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from pipeline.context import JobContext
from contract.errors import ErrorCode, JobCanceled, JobError
from pipeline.kinds.slideshow import KIND, SlideshowParams
from contract.messages import Progress

REPO = Path(__file__).resolve().parents[1]

# ffprobe is installed by `make test` (scripts/setup.sh); its absence is a failure, not a skip.
assert shutil.which("ffprobe"), "ffprobe missing: run make test (it installs ffmpeg)"


# -- helpers ---------------------------------------------------------------------


def make_ctx(tmp_path: Path, inputs: dict[str, list[Path]], send: Callable[[dict], None] | None = None,
             cancel: threading.Event | None = None) -> JobContext:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    return JobContext(
        job_id="show",
        job={"kind": "slideshow"},
        inputs=inputs,
        results_dir=results,
        device="cpu",
        send=send or (lambda message: None),
        cancel_event=cancel or threading.Event(),
    )


def solid_image(path: Path, color: str, size: tuple[int, int] = (320, 240)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def gradient_image(path: Path, size: tuple[int, int]) -> Path:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.stack([np.tile(x, (height, 1))] * 3, axis=-1)
    pixels[..., 2] = 128
    Image.fromarray(pixels).save(path)
    return path


def sine_wav(path: Path, seconds: float, rate: int = 44_100) -> Path:
    t = np.arange(round(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone.tobytes())
    return path


def ffprobe(path: Path) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout)


def streams_by_type(info: dict) -> dict[str, dict]:
    return {s["codec_type"]: s for s in info["streams"]}


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def frame_at(path: Path, index: int) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path.name} has no frame {index}")


# -- a full show -----------------------------------------------------------------


def test_title_cards_images_crossfade_and_music_make_an_h264_aac_mp4(tmp_path: Path) -> None:
    images = [
        gradient_image(tmp_path / "landscape.png", (640, 360)),
        gradient_image(tmp_path / "portrait.jpg", (300, 500)),
    ]
    music = sine_wav(tmp_path / "music.wav", seconds=6.0)  # longer than the show: trimmed
    messages: list[dict] = []
    ctx = make_ctx(tmp_path, {"images": images, "audio": [music]}, send=messages.append)
    params = SlideshowParams(
        slides=["Holiday 2026", "Day one: the long drive north along the coast"],
        seconds_per_slide=1.0, transition="crossfade", width=320, height=240, fps=10,
    )

    KIND.run(ctx, params)

    video = ctx.results_dir / "video.mp4"
    info = ffprobe(video)
    streams = streams_by_type(info)
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert Fraction(streams["video"]["avg_frame_rate"]) == 10
    assert int(streams["video"]["nb_frames"]) == 40  # 4 slides x 1 s x 10 fps
    assert float(streams["video"]["duration"]) == pytest.approx(4.0, abs=0.1)
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["sample_rate"]) == 48_000
    assert float(streams["audio"]["duration"]) == pytest.approx(4.0, abs=0.1)
    assert top_level_boxes(video).index("moov") < top_level_boxes(video).index("mdat")

    with Image.open(ctx.results_dir / "thumb.jpg") as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (320, 240)

    assert ctx.outputs == ["video.mp4", "thumb.jpg"]
    assert sorted(p.name for p in ctx.results_dir.iterdir()) == ["thumb.jpg", "video.mp4"]
    assert ctx.meta["video"] == {"duration": 4.0, "fps": 10.0, "width": 320, "height": 240, "codec": "h264"}
    assert ctx.meta["audio"]["codec"] == "aac"
    assert ctx.meta["audio"]["duration"] == pytest.approx(4.0, abs=0.1)

    progress = [vars(m) for m in messages if isinstance(m, Progress)]
    assert [m["progress"] for m in progress] == sorted(m["progress"] for m in progress)
    assert progress[-1]["stage"] == "encoding"
    rendering = [m for m in progress if m["stage"] == "rendering" and m["step"]]
    assert rendering[-1]["step"] == rendering[-1]["total_steps"] == 40


def test_without_seconds_per_slide_the_slides_share_the_audio(tmp_path: Path) -> None:
    images = [solid_image(tmp_path / f"{c}.png", c) for c in ("red", "green", "blue")]
    ctx = make_ctx(tmp_path, {"images": images, "audio": [sine_wav(tmp_path / "voice.wav", 4.5)]})

    KIND.run(ctx, SlideshowParams(width=320, height=240, fps=10))

    streams = streams_by_type(ffprobe(ctx.results_dir / "video.mp4"))
    assert float(streams["video"]["duration"]) == pytest.approx(4.5, abs=0.1)
    assert float(streams["audio"]["duration"]) == pytest.approx(4.5, abs=0.1)


def test_without_audio_there_is_no_audio_stream_and_slides_last_3_seconds(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {})

    KIND.run(ctx, SlideshowParams(slides=["Only", "Words"], transition="cut", width=320, height=240, fps=5))

    info = ffprobe(ctx.results_dir / "video.mp4")
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=0.2)
    assert ctx.meta["audio"] is None


@pytest.mark.parametrize(("transition", "mixed"), [("crossfade", True), ("cut", False)])
def test_crossfade_blends_across_the_boundary_and_cut_does_not(
    tmp_path: Path, transition: str, mixed: bool
) -> None:
    images = [solid_image(tmp_path / "red.png", "#ff0000"), solid_image(tmp_path / "blue.png", "#0000ff")]
    ctx = make_ctx(tmp_path, {"images": images})

    KIND.run(ctx, SlideshowParams(seconds_per_slide=1.0, transition=transition, transition_seconds=0.4,
                                  width=320, height=240, fps=10))

    last_frame_of_first_slide = frame_at(ctx.results_dir / "video.mp4", 9)
    red, green, blue = last_frame_of_first_slide[120, 160].astype(int)
    if mixed:
        assert red > 60 and blue > 60
    else:
        assert red > 200 and blue < 40


# -- cancel and bad inputs ---------------------------------------------------------


def test_cancel_during_rendering_stops_at_the_next_frame_and_leaves_no_result(tmp_path: Path) -> None:
    cancel = threading.Event()
    messages: list[Progress] = []

    def send(message) -> None:  # stands in for the daemon: it sees progress, then cancels
        messages.append(message)
        if isinstance(message, Progress) and message.stage == "rendering" and message.step:
            cancel.set()

    ctx = make_ctx(tmp_path, {"images": [gradient_image(tmp_path / "a.png", (320, 240))]}, send, cancel)

    with pytest.raises(JobCanceled):
        KIND.run(ctx, SlideshowParams(seconds_per_slide=60, width=320, height=240, fps=25))

    steps = [m.step for m in messages if isinstance(m, Progress) and m.step]
    assert steps == [1]
    assert list(ctx.results_dir.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["garbage", "truncated-png"],
)
def test_an_unreadable_image_fails_with_unsupported_input(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "holiday.png"
    bad.write_bytes(content)
    ctx = make_ctx(tmp_path, {"images": [solid_image(tmp_path / "ok.png", "red"), bad]})

    with pytest.raises(JobError) as error:
        KIND.run(ctx, SlideshowParams(seconds_per_slide=0.5, width=320, height=240, fps=10))

    assert error.value.code == ErrorCode.UNSUPPORTED_INPUT
    # refused by its first bytes (garbage) or by Pillow (a broken PNG)
    assert error.value.message.startswith(("holiday.png is not a readable image (", "holiday.png: not a readable image ("))
    assert str(tmp_path) not in error.value.message
    assert list(ctx.results_dir.iterdir()) == []


def test_unreadable_audio_fails_with_unsupported_input(tmp_path: Path) -> None:
    bad = tmp_path / "song.mp3"
    bad.write_bytes(b"ID3 but nothing else" * 10)
    ctx = make_ctx(tmp_path, {"images": [solid_image(tmp_path / "ok.png", "red")], "audio": [bad]})

    with pytest.raises(JobError) as error:
        KIND.run(ctx, SlideshowParams(width=320, height=240, fps=10))

    assert error.value.code == ErrorCode.UNSUPPORTED_INPUT
    assert error.value.message.startswith("song.mp3: ")


# -- params and the daemon's view of the kind ---------------------------------------


def test_params_are_checked_up_front() -> None:
    assert SlideshowParams(background="#FFF").background == "#ffffff"
    for bad in ({"width": 641}, {"height": 8}, {"fps": 0}, {"background": "red"},
                {"text_color": "#12345"}, {"transition": "wipe"}, {"speed": 2}):
        with pytest.raises(ValidationError):
            SlideshowParams(**bad)


def test_a_show_needs_images_or_slides() -> None:
    with pytest.raises(ValueError, match="images"):
        KIND.check(SlideshowParams(), {})
    KIND.check(SlideshowParams(slides=["Hi"]), {})
    KIND.check(SlideshowParams(), {"images": [Path("a.png")]})


def test_importing_the_kind_loads_no_heavy_libraries() -> None:
    code = (
        "import sys, pipeline.kinds.slideshow; "
        "heavy = {'av', 'PIL', 'numpy', 'torch'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
