"""talking-head: a face (a photo or a short video) and a voice in, a lip-synced video out.

Speech is `text` spoken as the `tts` kind speaks it (`voice`, `language`, `speed`,
`normalize`, cloning from input `reference_audio`), or input `audio` as it is. The face is
found in every used frame (pipeline/faces/), the box smoothed over time; a video is played
ping-pong (or looped) to the speech's length. `lipsync` names a registry model whose
folder is a Wav2Lip or MuseTalk 1.5 layout (pipeline/lipsync/), or "none": the face as it
is, and the result says `"lipsync": "none"`. Only the square face region is redrawn, pasted
back with a feathered mask: outside it every frame is the source frame.

Output size: `width`/`height` (one gives the other by the source's aspect), or a
`resolution` preset (the short side: 480p, 720p, 1080p), else the source's size (short side
at most 1080). `crop: face` frames the head and shoulders instead of the whole picture.
`background: keep` is the only one on this host: replacing it needs a person-segmentation
model, and none installs with a package from the registries this project uses.

Stages: speech 0–15, face_detection 15–30, loading_model, lipsync 30–92 (frame counts and
ETA; frames are encoded as they are made), encoding 92–100. Results: video.mp4 (H.264 +
AAC, faststart), speech.wav, thumb.jpg; in `result`: video, audio, lipsync (the backend or
"none"), model, face (detector, source, frames, box), speech and seconds per stage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.errors import ErrorCode, JobError
from contract.kinds import EvenSide, InputSpec, KindSpec
from contract.voices import VoiceBook
from pipeline.speech.params import REFERENCE_AUDIO, Language, Normalize, SpokenText, Speed, Voice

if TYPE_CHECKING:
    import numpy as np

    from pipeline.context import JobContext

DETECTOR_ENV = "VIDSPOOL_FACE_DETECTOR_MODEL"  # a YuNet .onnx the operator put on the host
MAX_FACE_FRAMES = 300  # of a face video; it plays ping-pong, so longer speech still works
MAX_FACE_SIDE = 1920  # larger face photos and videos are scaled down to this long side on reading
MAX_AUDIO_SECONDS = 3600
DEFAULT_FPS = 25
MAX_DEFAULT_SHORT_SIDE = 1080
RESOLUTIONS = {"480p": 480, "720p": 720, "1080p": 1080}
FACE_CROP_SCALE = 2.4  # crop 'face': the view around the face box, in face widths
# The square region each backend redraws, around the face box: (scale, shift down).
REGION = {"wav2lip": (1.1, 0.06), "musetalk": (1.25, 0.05)}
# Frames per backend call (CPU, GPU): on 2 CPU cores Wav2Lip runs fastest per frame at 8–16.
BATCH = {"wav2lip": (16, 128), "musetalk": (8, 32)}
DETECT_STRIDE = 2  # detect on every other frame of a video, interpolate between
SEGMENTATION_MESSAGE = (
    "background {name!r}: replacing the background needs a person-segmentation model, and none installs "
    "with a package from the registries this project uses (OpenCV ships face detectors only); "
    "use background 'keep'")


class TalkingHeadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SpokenText | None = Field(None, description="what the face says; or give input 'audio'")
    voice: Voice = None
    language: Language = None
    speed: Speed = 1.0
    normalize: Normalize = True
    lipsync: str | None = Field(None, min_length=1, max_length=200,
                                description='a talking-head model (Wav2Lip or MuseTalk folder) from the registry, or "none"; '
                                            "default: [kinds.talking-head] model")
    width: EvenSide | None = Field(None, ge=16, le=3840)
    height: EvenSide | None = Field(None, ge=16, le=3840)
    resolution: Literal["480p", "720p", "1080p"] | None = Field(None, description="the short side; the other by the source's aspect")
    fps: int | None = Field(None, ge=1, le=60, description="default: the face video's rate, or 25 for a photo")
    crop: Literal["full", "face"] = Field("full", description="the whole picture, or a head-and-shoulders view")
    background: Literal["keep", "color", "image"] = "keep"
    face_index: int = Field(0, ge=0, le=50, description="which face when there are several: 0 is the largest")
    loop: Literal["pingpong", "loop"] = Field("pingpong", description="how a face video shorter than the speech repeats")


def check(params: TalkingHeadParams, inputs: Mapping[str, list[Path]], voices: VoiceBook = VoiceBook()) -> None:
    """At accept time: one source of speech, the voice as tts checks it, a keepable background."""
    has_audio = bool(inputs.get("audio"))
    if params.text is None and not has_audio:
        raise ValueError("give params.text (spoken with a voice) or inputs.audio (a recording)")
    if params.text is not None and has_audio:
        raise ValueError("give params.text or inputs.audio, not both")
    if has_audio and inputs.get("reference_audio"):
        raise ValueError("inputs.reference_audio clones a voice for params.text; with inputs.audio there is nothing to clone")
    if params.resolution and (params.width or params.height):
        raise ValueError("give params.resolution or params.width/height, not both")
    if params.background != "keep":
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, SEGMENTATION_MESSAGE.format(name=params.background))
    if params.text is not None:
        from pipeline.speech.for_jobs import check_speech

        check_speech(params.text, params.voice, params.language, voices, cloning=bool(inputs.get("reference_audio")))


def run(ctx: JobContext, params: TalkingHeadParams) -> None:
    import numpy as np

    from pipeline import media
    from pipeline.context import StageSeconds, StepReporter
    from pipeline.faces.source import load_face_source

    seconds = StageSeconds()
    # Everything a job can be refused for is checked before any synthesis.
    # An uploaded recording is spoken as it is: no speech stage, the face is read first.
    ctx.progress(0, stage="speech" if ctx.input("audio") is None else "face_detection", message="reading the face")
    backend = check_lipsync_model(ctx)
    source = load_face_source(ctx.input("face"), MAX_FACE_FRAMES, max_side=MAX_FACE_SIDE)
    detector = make_detector()
    if not source.is_video:  # one frame: find the face now, before any speech
        boxes = track(ctx, source, source.frames, detector, params.face_index, quiet=True)
    audio_path = ctx.input("audio")
    recording = media.load_audio(audio_path, max_seconds=MAX_AUDIO_SECONDS) if audio_path else None

    # -- speech ----------------------------------------------------------------------------
    speech_meta: dict
    if recording is None:
        from pipeline.speech.for_jobs import job_speech

        spoken = job_speech(ctx, params.text, params.voice, params.language, params.speed, params.normalize,
                            ctx.input("reference_audio"), progress_span=(1, 15))
        voice = np.asarray(spoken.speech.samples, np.float32)
        rate = spoken.speech.sample_rate
        speech_meta = {"engine": spoken.choice.engine, "voice": spoken.choice.voice, "language": spoken.choice.language,
                       "speed": params.speed, "sentences": len(spoken.speech.segments), "normalized": params.normalize}
    else:
        voice, rate = recording.mean(axis=0), media.AUDIO_RATE
        speech_meta = {"source": audio_path.name}
    duration = len(voice) / rate
    if duration < 0.05:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"the speech is {duration:.3f} s long: too short for a video")
    fps = params.fps or (round(source.fps) if source.is_video and source.fps else DEFAULT_FPS)
    total = max(1, round(duration * fps))
    speech_meta["duration"] = round(duration, 3)
    seconds.lap("speech")

    # -- faces -----------------------------------------------------------------------------
    from pipeline.faces.timeline import source_indices

    ctx.progress(15, stage="face_detection", message=f"{len(source.frames)} source frame(s)")
    indices = source_indices(len(source.frames), source.fps if source.is_video else None, total, fps,
                             mode=params.loop)
    if source.is_video:
        used = sorted(set(indices))  # detect only the frames the video will show
        used_boxes = track(ctx, source, [source.frames[i] for i in used], detector, params.face_index)
        boxes = np.zeros((len(source.frames), 4), np.float32)
        boxes[used] = used_boxes
    src_h, src_w = source.frames[0].shape[:2]
    view = output_view(params, boxes[indices], src_w, src_h)
    width, height = output_size(params, view[2] - view[0], view[3] - view[1])
    ctx.check_frame_budget(total, width, height)
    seconds.lap("face_detection")

    # -- lip sync and encoding ---------------------------------------------------------------
    model = None
    if backend is not None:
        ctx.progress(30, stage="loading_model", message=f"model {ctx.model_name}")
        resident, loaded_now = ctx.models.ensure(
            ctx.model_name, ctx.model_config, on_load=lambda message: ctx.progress(30, stage="loading_model", message=message))
        model = resident.pipe
        ctx.meta["model"] = {"name": ctx.model_name, "backend": backend, "loaded": loaded_now,
                             "load_seconds": round(resident.load_seconds, 3) if loaded_now else 0.0}
        seconds.lap("load_model")

    mp4_audio = media.resample_audio(voice, rate)
    thumb_at = total // 2
    thumb = None
    report = StepReporter(ctx)
    ctx.progress(30, stage="lipsync", message=f"frame 0/{total}", step=0, total_steps=total)
    with media.Mp4Writer(ctx.output_path("video.mp4"), width, height, fps, audio=mp4_audio,
                         fade_out_seconds=0.05) as writer:
        synced = lip_synced_frames(model, backend, source.frames, boxes, indices, voice, rate, fps,
                                   on_gpu=ctx.device.startswith("cuda"))
        for start, frames in synced:
            for offset, frame in enumerate(frames):
                out = frame_to_output(frame, view, width, height)
                writer.write(out)
                ctx.preview.frame(out, start + offset + 1)
                if start + offset == thumb_at:
                    thumb = out
            done = start + len(frames)
            report(30 + 62 * done / total, done, total, "lipsync", f"frame {done}/{total}")
    seconds.lap("lipsync")

    ctx.progress(92, stage="encoding", message="finishing video.mp4")
    from pipeline.speech import audio_out

    audio_out.write_audio(voice, rate, ctx.output_path("speech.wav"), "wav")
    media.write_thumb(thumb, ctx.output_path("thumb.jpg"))
    info = media.probe(ctx.output_path("video.mp4"))
    seconds.lap("encoding")

    first = boxes[indices[0]]
    ctx.meta["video"] = {**info["video"], "frames": total}
    ctx.meta["audio"] = info["audio"]
    ctx.meta["lipsync"] = backend or "none"
    ctx.meta["face"] = {"detector": detector.name, "source": "video" if source.is_video else "photo",
                        "source_frames": len(source.frames), "source_fps": source.fps,
                        "box": [round(float(v), 1) for v in first], "view": list(view)}
    ctx.meta["speech"] = speech_meta
    ctx.meta["seconds"] = dict(seconds)
    ctx.publish("video.mp4")
    ctx.publish("speech.wav")
    ctx.publish("thumb.jpg")


def check_lipsync_model(ctx: JobContext) -> str | None:
    """The backend of the job's lipsync model (None for "none"), its folder checked on disk."""
    if ctx.model_name is None:
        return None
    from contract.model_folders import lipsync_backend, model_folder

    folder = model_folder(ctx.model_name, ctx.model_config)  # model_not_found names the path
    backend = lipsync_backend(ctx.model_name, folder, ctx.model_config)
    if backend is None:
        raise JobError(ErrorCode.INVALID_JOB, (
            f"lipsync: model {ctx.model_name!r} ({folder}) is not a lip-sync model; talking-head needs a "
            "Wav2Lip or MuseTalk 1.5 folder (see the README, Talking heads)"))
    return backend


def make_detector():
    from pipeline.faces.detect import FaceDetector

    model = os.environ.get(DETECTOR_ENV, "").strip()
    return FaceDetector(Path(model) if model else None)


def track(ctx: JobContext, source, frames: list, detector, face_index: int, quiet: bool = False):
    from pipeline.context import StepReporter
    from pipeline.faces.track import track_faces

    report = StepReporter(ctx)

    def progress(done: int, total: int) -> None:
        report(15 + 15 * done / max(1, total), done, total, "face_detection", f"frame {done}/{total}")

    stride = DETECT_STRIDE if len(frames) > 1 else 1
    return track_faces(frames, detector, face_index=face_index, stride=stride, progress=None if quiet else progress,
                       name=source.name)


def lip_synced_frames(model, backend: str | None, frames: list, boxes, indices: list[int], voice, rate: int, fps: float,
                      on_gpu: bool = False):
    """Yields (first output index, frames) in batches: the source frames with the face
    region redrawn by `model` (as they are with no model)."""
    import numpy as np

    from pipeline import media
    from pipeline.faces.blend import crop_face, face_region, lower_face_mask, paste_face

    total = len(indices)
    if model is None:
        for start in range(0, total, 64):
            yield start, [frames[i] for i in indices[start:start + 64]]
        return
    from pipeline.lipsync.base import AUDIO_RATE

    audio16k = media.resample_audio(voice, rate, AUDIO_RATE)[0]
    features = model.audio_features(audio16k, fps, total)
    size = model.face_size
    mask = lower_face_mask(size)
    scale, shift = REGION[backend]
    height, width = frames[0].shape[:2]
    batch = BATCH[backend][on_gpu]
    for start in range(0, total, batch):
        chunk = indices[start:start + batch]
        regions = [face_region(boxes[i], width, height, scale=scale, shift_down=shift) for i in chunk]
        faces = np.stack([crop_face(frames[i], region, size) for i, region in zip(chunk, regions, strict=True)])
        synced = model.sync(faces, features[start:start + len(chunk)])
        yield start, [paste_face(frames[i], face, region, mask) for i, face, region in zip(chunk, synced, regions, strict=True)]


def output_view(params: TalkingHeadParams, boxes, src_w: int, src_h: int) -> tuple[int, int, int, int]:
    """The part of the source frame the video shows (x0, y0, x1, y1): all of it, or with
    `crop: face` a view FACE_CROP_SCALE face widths wide around the median face box, of
    the output's aspect where it is known (else square), kept inside the frame."""
    import numpy as np

    if params.crop == "full":
        return 0, 0, src_w, src_h
    x, y, w, h = np.median(np.asarray(boxes, np.float32).reshape(-1, 4), axis=0)
    aspect = (params.width / params.height) if params.width and params.height else 1.0
    side = max(w, h) * FACE_CROP_SCALE
    view_w, view_h = (side * aspect, side) if aspect >= 1 else (side, side / aspect)
    scale = min(1.0, src_w / view_w, src_h / view_h)  # fit inside the frame
    view_w, view_h = view_w * scale, view_h * scale
    cx, cy = x + w / 2, y + h / 2 + 0.15 * h  # a little below the face's centre: the shoulders
    x0 = int(round(min(max(cx - view_w / 2, 0), src_w - view_w)))
    y0 = int(round(min(max(cy - view_h / 2, 0), src_h - view_h)))
    return x0, y0, x0 + int(round(view_w)), y0 + int(round(view_h))


def output_size(params: TalkingHeadParams, view_w: int, view_h: int) -> tuple[int, int]:
    """(width, height), even: as asked, or from the preset's short side, or the view's own."""
    def even(value: float) -> int:
        return max(2, int(round(value / 2)) * 2)

    if params.width and params.height:
        return params.width, params.height
    if params.width:
        return params.width, even(params.width * view_h / view_w)
    if params.height:
        return even(params.height * view_w / view_h), params.height
    short = RESOLUTIONS[params.resolution] if params.resolution else min(MAX_DEFAULT_SHORT_SIDE, min(view_w, view_h))
    scale = short / min(view_w, view_h)
    return even(view_w * scale), even(view_h * scale)


def frame_to_output(frame: np.ndarray, view: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """The view of a frame, centre-cropped to the output's aspect and resized to it (the
    frame itself when it already is the output: no resampling, pixels unchanged)."""
    import cv2

    x0, y0, x1, y1 = view
    view_w, view_h = x1 - x0, y1 - y0
    if abs(view_w / view_h - width / height) > 1e-3:  # cover: trim the longer side
        if view_w / view_h > width / height:
            keep = view_h * width / height
            x0 += int(round((view_w - keep) / 2))
            x1 = x0 + int(round(keep))
        else:
            keep = view_w * height / width
            y0 += int(round((view_h - keep) / 2))
            y1 = y0 + int(round(keep))
    part = frame[y0:y1, x0:x1]
    if part.shape[1] == width and part.shape[0] == height:
        return part if part.flags.c_contiguous else part.copy()
    shrinking = part.shape[1] > width
    return cv2.resize(part, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


KIND = KindSpec(
    name="talking-head",
    params=TalkingHeadParams,
    inputs=(InputSpec("face", media=("image", "video"), required=True), InputSpec("audio", media=("audio",)),
            REFERENCE_AUDIO),
    run=run,
    check=check,
    check_takes_voices=True,
    main_result="video.mp4",
    model_param="lipsync",
    description="A face (photo or video) speaking a text or a recording, lip-synced by Wav2Lip or MuseTalk.",
)
