"""narrated-video: a text spoken over backgrounds, one scene per sentence, with captions.

The text is spoken as the `tts` kind speaks it (same `voice`, `language`, `speed`,
`normalize`; espeak-ng). Each sentence is a scene, from its start on the speech's time line
to the next sentence's start (the first from 0, the last to the end of the video, which is
the speech plus TAIL_SECONDS).

Captions (`captions`): `srt` writes captions.srt and captions.vtt from the sentence
timings, split into cues of at most two lines of the frame's width; `burn` draws those cues
into the frames (DejaVu Sans Bold, white with a dark outline, bottom-centred inside 5 %
safe margins); `both` (default) does both; `none` neither. Unless `none`, the MP4 also
carries the cues as a soft subtitle track (mov_text): PyAV 18.1 cannot open FFmpeg's
mov_text encoder (it needs an ASS header PyAV does not set), so the MP4 written by PyAV is
remuxed once, streams copied, by the ffmpeg command line with the SRT as a second input.

Backgrounds (`background`):
- `color` (default): `background_color`, one hex colour or two (a top-to-bottom gradient),
  rendered once;
- `images`: input `images`, one per scene (cycled when fewer), cover-cropped, with a slow
  zoom and pan (Ken Burns);
- `library`: the folder named by the worker's environment variable VIDSPOOL_MEDIA_LIBRARY
  (set by the operator, never by the job): clips (mp4, webm, mov, mkv) and images, picked
  per sentence by the words of their file names and of optional NAME.tags sidecar files;
  clips loop or are trimmed to the scene; a sentence matching nothing gets the colour card;
- `generate`: a text-to-video clip per scene from the model registry (pipeline/scene_clips.py):
  the job's `model` or `[kinds.narrated-video] model`, a model that serves text-to-video;
  the scene's prompt is `background_prompt` plus its sentence, scene i seeded `seed` + i;
  each clip plays ping-pong over its scene. No such model → model_not_found at once.

Input `music` (any audio FFmpeg reads) is looped to the video and mixed under the voice at
MUSIC_GAIN, ducked to DUCKED_GAIN while a sentence is spoken (DUCK_RAMP_SECONDS ramps); the
mix is scaled down when its peak would pass PEAK_LIMIT. The music is decoded before any
speech is synthesized, so an unreadable file fails the job (unsupported_input) at once.

Stages: speech, captions, backgrounds, rendering, encoding. Results: video.mp4 (H.264
yuv420p + AAC 48 kHz stereo + mov_text subtitles, faststart), speech.wav (the voice alone,
16-bit mono), thumb.jpg, captions.srt and captions.vtt (with `srt` or `both`); in
`result`: video, audio (media.probe), speech (engine, voice, language, sentences), scenes
(each scene's start, end and background) and seconds per stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract.kinds import EvenSide, InputSpec, KindSpec
from contract.voices import VoiceBook
from pipeline.speech.params import Language, Normalize, SpokenText, Speed, Voice

if TYPE_CHECKING:
    import numpy as np

    from pipeline.context import JobContext

LIBRARY_ENV = "VIDSPOOL_MEDIA_LIBRARY"
TAIL_SECONDS = 0.4  # after the last word, so the ending is not cut
FADE_OUT_SECONDS = 0.3
MUSIC_GAIN = 0.6
DUCKED_GAIN = 0.25
DUCK_RAMP_SECONDS = 0.2
PEAK_LIMIT = 0.98
_HEX = r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})"


class NarratedVideoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SpokenText = Field(description="what to say; one scene per sentence")
    voice: Voice = None
    language: Language = None
    speed: Speed = 1.0
    normalize: Normalize = True
    width: EvenSide = Field(default=1280, ge=16, le=3840)
    height: EvenSide = Field(default=720, ge=16, le=3840)
    fps: int = Field(default=30, ge=1, le=60)
    captions: Literal["burn", "srt", "both", "none"] = "both"
    background: Literal["color", "images", "library", "generate"] = "color"
    background_prompt: str | None = Field(None, max_length=2000,
                                          description="generate: a style put before each scene's sentence")
    seed: int | None = Field(None, ge=0, lt=2**31, description="generate: scene i uses seed + i; default random")
    background_color: str | list[str] = Field(
        default="#1b2838", validate_default=True, description='"#rrggbb", or two colours ("#000 #345" or a list) for a vertical gradient'
    )

    @field_validator("background_color")
    @classmethod
    def _colors(cls, value: str | list[str]) -> list[str]:
        parts = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else list(value)
        parts = [p for p in parts if p]
        if not 1 <= len(parts) <= 2 or not all(re.fullmatch(_HEX, p) for p in parts):
            raise ValueError(f"{value!r}: give one hex colour ('#1a2b3c') or two for a gradient ('#000000 #334455')")
        return ["#" + (d if len(d) == 6 else "".join(c * 2 for c in d)) for d in (p[1:].lower() for p in parts)]


def check(params: NarratedVideoParams, inputs: Mapping[str, list[Path]], voices: VoiceBook = VoiceBook()) -> None:
    """At accept time: the voice and text as tts; images only with background 'images'."""
    from pipeline.speech.for_jobs import check_speech

    check_speech(params.text, params.voice, params.language, voices, cloning=False)
    if params.background == "images" and not inputs.get("images"):
        raise ValueError("background 'images' needs input 'images'")
    if inputs.get("images") and params.background != "images":
        raise ValueError(f"input 'images' is used only with background 'images' (background is {params.background!r})")


def run(ctx: JobContext, params: NarratedVideoParams) -> None:
    import numpy as np

    from pipeline import media
    from contract.errors import ErrorCode, JobError

    from pipeline.context import StageSeconds, StepReporter

    seconds = StageSeconds()
    ctx.progress(0, stage="speech", message="preparing")
    scene_clips = None
    if params.background == "generate":  # checked before any synthesis: the model, its sizes
        import random

        from pipeline.scene_clips import SceneClips

        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
        scene_clips = SceneClips(ctx, params.background_prompt, seed)
    library = None
    if params.background == "library":
        library = open_library()
    music = None
    music_path = ctx.input("music")
    if music_path is not None:  # decoded first: a broken file fails before any synthesis
        music = media.load_audio(music_path, max_seconds=3600)

    speech, choice, spoken_text = synthesize(ctx, params)
    segments = speech.segments
    duration = speech.duration + TAIL_SECONDS
    total_frames = max(1, round(duration * params.fps))
    ctx.check_frame_budget(total_frames, params.width, params.height)
    seconds.lap("speech")

    # -- captions ----------------------------------------------------------------------
    ctx.progress(30, stage="captions", message="timing captions")
    from pipeline.captions import CaptionStyle, composite, render_caption
    from pipeline.speech import audio_out, subtitles

    style = CaptionStyle.for_frame(params.width, params.height)
    cues = subtitles.split_cues(segments, style.max_cue_chars)
    track = params.captions != "none"  # the MP4's soft subtitle track
    files = params.captions in ("srt", "both")
    burn = params.captions in ("burn", "both")
    srt_tmp = ctx.output_path("captions.srt")
    if track:  # the SRT feeds the subtitle track too
        subtitles.write_srt(cues, srt_tmp, width=style.chars_per_line)
    if files:
        subtitles.write_vtt(cues, ctx.output_path("captions.vtt"), width=style.chars_per_line)
    rendered = [render_caption(cue.text, style) for cue in cues] if burn else []
    seconds.lap("captions")

    # -- backgrounds -------------------------------------------------------------------
    ctx.progress(32, stage="backgrounds", message="preparing backgrounds")
    from pipeline import backgrounds

    card = backgrounds.color_card(params.width, params.height, params.background_color)
    starts = [0] + [max(0, round(s.start * params.fps)) for s in segments[1:]] + [total_frames]
    for i in range(1, len(starts)):  # a scene lasts at least one frame where it can
        starts[i] = min(max(starts[i], starts[i - 1]), total_frames)
    images = ctx.input_list("images")
    scene_info: list[dict] = []
    previous_pick = None
    scene_plan: list[tuple[str, Path | None]] = []
    for index, segment in enumerate(segments):
        if params.background == "images":
            scene_plan.append(("image", images[index % len(images)]))
        elif params.background == "generate":
            scene_plan.append(("generated", None))
        elif params.background == "library":
            pick = library.pick(segment.text, avoid=previous_pick)
            previous_pick = pick
            if pick is None:
                scene_plan.append(("color", None))
            else:
                scene_plan.append(("clip" if library.is_clip(pick) else "image", pick))
        else:
            scene_plan.append(("color", None))
    for index, (source_kind, path) in enumerate(scene_plan):
        scene_info.append({"text": segments[index].text[:200], "start": round(starts[index] / params.fps, 3),
                           "end": round(starts[index + 1] / params.fps, 3), "background": source_kind,
                           "source": path.name if path else None})
    if params.background == "images":  # read them all now: a broken image fails before rendering
        for path in images:
            media.load_image(path, draft_size=(params.width, params.height))

    clips: dict[int, tuple[list, float]] = {}
    render_from = 35.0
    if scene_clips is not None:
        render_from = 75.0
        span = (render_from - 33.0) / len(segments)
        for index, segment in enumerate(segments):
            clips[index] = scene_clips.generate(ctx, index, len(segments), segment.text,
                                                (33.0 + span * index, 33.0 + span * (index + 1)))
        ctx.meta["model"] = scene_clips.describe()

    def make_source(index: int):
        source_kind, path = scene_plan[index]
        frames = starts[index + 1] - starts[index]
        if source_kind == "generated":
            clip, clip_fps = clips.pop(index)
            return backgrounds.FramesLoop(clip, clip_fps, params.width, params.height, params.fps)
        if source_kind == "image":
            image = media.load_image(path, draft_size=(params.width, params.height))
            return backgrounds.KenBurns(image, params.width, params.height, frames, variant=index)
        if source_kind == "clip":
            return backgrounds.ClipLoop(path, params.width, params.height, params.fps)
        return backgrounds.ColorCard(card)
    seconds.lap("backgrounds")

    # -- audio mix -----------------------------------------------------------------------
    voice = media.resample_audio(speech.samples, speech.sample_rate)
    mix = voice if music is None else mix_music(voice, music, segments, total_frames / params.fps)

    # -- rendering -------------------------------------------------------------------------
    cue_frames = [(max(0, round(c.start * params.fps)), max(0, round(c.end * params.fps))) for c in cues]
    cue_index = 0
    raw_tmp = ctx.results_dir / ".video.raw.mp4.tmp" if track else ctx.output_path("video.mp4")
    report = StepReporter(ctx)
    thumb_frame: np.ndarray | None = None
    thumb_at = min(total_frames - 1, (starts[0] + starts[1]) // 2)
    cached: tuple[object, int, np.ndarray] | None = None  # (static source, cue, frame)
    ctx.progress(render_from, stage="rendering", message=f"{total_frames} frames")
    with ReusingMp4Writer(raw_tmp, params.width, params.height, params.fps, audio=mix,
                         fade_out_seconds=FADE_OUT_SECONDS) as writer:
        for scene in range(len(scene_plan)):
            source = make_source(scene)
            try:
                for frame_index in range(starts[scene], starts[scene + 1]):
                    while cue_index < len(cue_frames) and cue_frames[cue_index][1] <= frame_index:
                        cue_index += 1
                    active = -1
                    if burn and cue_index < len(cue_frames) and cue_frames[cue_index][0] <= frame_index:
                        active = cue_index
                    if source.static and cached is not None and cached[0] is source and cached[1] == active:
                        frame = cached[2]
                    else:
                        frame = source.frame(frame_index - starts[scene])
                        if active >= 0:
                            frame = composite(frame, rendered[active])
                        if source.static:
                            cached = (source, active, frame)
                    writer.write(frame)
                    if frame_index == thumb_at:
                        thumb_frame = frame
                    done = frame_index + 1
                    ctx.preview.frame(frame, done)
                    report(render_from + (93 - render_from) * done / total_frames, done, total_frames,
                           "rendering", f"frame {done}/{total_frames}")
            finally:
                source.close()
        ctx.progress(93, stage="encoding", message="finishing video.mp4")
    seconds.lap("rendering")

    if track:
        add_subtitle_track(raw_tmp, srt_tmp, ctx.output_path("video.mp4"))
    audio_out.write_audio(speech.samples, speech.sample_rate, ctx.output_path("speech.wav"), "wav")
    media.write_thumb(thumb_frame if thumb_frame is not None else card, ctx.output_path("thumb.jpg"))
    info = media.probe(ctx.output_path("video.mp4"))
    if info["video"] is None:
        raise JobError(ErrorCode.INTERNAL, "the written video.mp4 has no video stream")
    seconds.lap("encoding")

    ctx.meta["video"] = info["video"]
    ctx.meta["audio"] = info["audio"]
    ctx.meta["speech"] = {"engine": choice.engine, "voice": choice.voice, "language": choice.language,
                          "speed": params.speed, "sentences": len(segments), "duration": round(speech.duration, 3),
                          "normalized": params.normalize, "normalized_text": spoken_text[:2000]}
    ctx.meta["captions"] = {"mode": params.captions, "cues": len(cues), "chars_per_line": style.chars_per_line}
    ctx.meta["scenes"] = scene_info
    ctx.meta["seconds"] = dict(seconds)
    ctx.publish("video.mp4")
    ctx.publish("speech.wav")
    ctx.publish("thumb.jpg")
    if files:
        ctx.publish("captions.srt")
        ctx.publish("captions.vtt")
    else:
        srt_tmp.unlink(missing_ok=True)


def _reusing_writer_class():
    """media.Mp4Writer that converts a frame to YUV once when the same array is written
    again (a static background between caption changes): about half of a frame's cost."""
    import av
    from av.video.reformatter import ColorRange, Colorspace

    from pipeline import media

    class _Writer(media.Mp4Writer):
        _last_array = None
        _last_yuv = None

        def write(self, frame):
            if frame is not self._last_array or self._last_yuv is None:
                if frame.shape != (self.height, self.width, 3) or frame.dtype.name != "uint8":
                    raise ValueError(f"frame must be uint8 ({self.height}, {self.width}, 3), got {frame.dtype} {frame.shape}")
                import numpy as np

                rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                self._last_yuv = rgb.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                              dst_color_range=ColorRange.MPEG)
                self._last_array = frame
            yuv = self._last_yuv
            yuv.pts = self.frames_written  # the encoder copies the picture, so one frame object serves
            self._container.mux(self._video.encode(yuv))
            self.frames_written += 1
            self._send_audio(self._samples_for(self.frames_written) - self._fade_samples)

    return _Writer


def ReusingMp4Writer(*args, **kwargs):  # noqa: N802 - used like a class
    return _reusing_writer_class()(*args, **kwargs)


def open_library():
    import os

    from pipeline.backgrounds import MediaLibrary
    from contract.errors import ErrorCode, JobError

    folder = os.environ.get(LIBRARY_ENV, "").strip()
    if not folder:
        raise JobError(ErrorCode.INVALID_JOB,
                       f"background 'library' needs a media library: the operator sets {LIBRARY_ENV} "
                       "to a folder of clips and images; this host has none")
    return MediaLibrary(Path(folder))


def synthesize(ctx: JobContext, params: NarratedVideoParams):
    """The speech, as the tts kind makes it (any voice, cloning included), with progress 1–29 %."""
    from pipeline.speech.for_jobs import job_speech

    spoken = job_speech(ctx, params.text, params.voice, params.language, params.speed, params.normalize,
                        None, progress_span=(1, 29))
    return spoken.speech, spoken.choice, spoken.text


def duck_envelope(segments, length: int, rate: int) -> np.ndarray:
    """Music gain per sample: MUSIC_GAIN, down to DUCKED_GAIN while speaking, with linear
    ramps of DUCK_RAMP_SECONDS that finish before a sentence starts and begin after it ends."""
    import numpy as np

    control_rate = 1000  # gain points a second, interpolated to samples
    points = int(np.ceil(length / rate * control_rate)) + 1
    ducked = np.zeros(points, np.float32)
    ramp = max(1, round(DUCK_RAMP_SECONDS * control_rate))
    for segment in segments:
        a = max(0, round(segment.start * control_rate) - ramp // 2)
        b = min(points, round(segment.end * control_rate) + ramp // 2)
        ducked[a:b] = 1.0
    # A box filter as wide as the ramp turns each edge into a linear ramp of that length.
    kernel = np.ones(ramp, np.float32) / ramp
    smooth = np.convolve(np.pad(ducked, (ramp, ramp), mode="edge"), kernel, mode="same")[ramp:-ramp]
    gain = MUSIC_GAIN + (DUCKED_GAIN - MUSIC_GAIN) * smooth
    at = np.arange(length, dtype=np.float64) * (control_rate / rate)
    return np.interp(at, np.arange(points), gain).astype(np.float32)


def mix_music(voice: np.ndarray, music: np.ndarray, segments, seconds: float) -> np.ndarray:
    """Voice (2, n) plus the music looped to `seconds`, ducked under speech, peak-limited."""
    import numpy as np

    from pipeline.media import AUDIO_RATE

    length = max(voice.shape[1], round(seconds * AUDIO_RATE))
    if music.shape[1] == 0:
        return voice
    repeats = -(-length // music.shape[1])
    bed = np.tile(music, (1, repeats))[:, :length] if repeats > 1 else music[:, :length]
    mix = bed * duck_envelope(segments, length, AUDIO_RATE)[np.newaxis, :]
    mix[:, : voice.shape[1]] += voice
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > PEAK_LIMIT:
        mix *= PEAK_LIMIT / peak
    return mix.astype(np.float32, copy=False)


def add_subtitle_track(video: Path, srt: Path, out: Path) -> None:
    """Copies video and audio and adds the SRT as a mov_text track (ffmpeg command line),
    with the index first; removes `video` afterwards."""
    import shutil
    import subprocess

    from contract.errors import ErrorCode, JobError

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise JobError(ErrorCode.INTERNAL, "the ffmpeg command line is not installed; it adds the subtitle track")
    command = [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "mp4", "-i", str(video), "-f", "srt", "-i", str(srt),
               "-map", "0", "-map", "1", "-c", "copy", "-c:s", "mov_text", "-metadata:s:s:0", "language=und",
               "-movflags", "+faststart", "-f", "mp4", str(out)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        video.unlink(missing_ok=True)
        raise JobError(ErrorCode.INTERNAL, "adding the subtitle track took over 10 minutes") from None
    video.unlink(missing_ok=True)
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        tail = result.stderr.strip().splitlines()[-3:]
        raise JobError(ErrorCode.INTERNAL, f"adding the subtitle track failed: {' / '.join(tail)}")


KIND = KindSpec(
    name="narrated-video",
    params=NarratedVideoParams,
    inputs=(InputSpec("images", media=("image",), many=True), InputSpec("music", media=("audio",))),
    run=run,
    check=check,
    check_takes_voices=True,
    main_result="video.mp4",
    takes_model=True,  # background 'generate' runs a text-to-video model
    model_kinds=("text-to-video",),
    description="A text spoken over colour cards, images, library clips or generated clips, one scene per sentence, with captions.",
)
