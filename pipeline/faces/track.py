"""One face box per frame: detect, follow the chosen face, fill the gaps, smooth.

Detection runs on every `stride`-th frame (and the last); the frames between, and frames
where the followed face was not found, get boxes interpolated from their neighbours (held
before the first and after the last find). The first frame with any face picks the face:
the `face_index`-th largest. After that each detection frame takes the face nearest the
last one followed, within a reach that grows while the face is missing, so a second face
does not steal the track. The boxes' centre and size are then smoothed over time.

A video fails only when no checked frame has a face at all (docs/talking-heads.md): a
video that shows the face in only a few frames keeps the box where it was last seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from contract.errors import ErrorCode, JobError
from pipeline.faces.detect import Box, FaceDetector

# Gaussian width, in frames, of the smoothing (about 5 frames at half height).
SMOOTH_SIGMA_FRAMES = 1.5
# How far (in face sides) the face's centre may move to the next detection frame: REACH
# for the next frame plus REACH_PER_FRAME for every further frame, at most MAX_REACH.
REACH = 0.5
REACH_PER_FRAME = 0.25
MAX_REACH = 3.0
# A detection more than this factor bigger or smaller than the followed face is another face.
MAX_SIZE_CHANGE = 2.0
# A photo with no face at the usual detection size is searched once more this large, for
# a small face in a big photo (a 4032x3024 phone picture searched at 640 px misses faces
# under about 150 px); a video is not, as that would make every faceless frame 6x slower.
PHOTO_RETRY_LONG_SIDE = 1600
# Progress is reported about this many times over the detection frames.
PROGRESS_REPORTS = 100


def track_faces(
    frames: Sequence[np.ndarray],
    detector: FaceDetector,
    face_index: int = 0,
    stride: int = 1,
    progress: Callable[[int, int], None] | None = None,
    *,
    name: str | None = None,
) -> np.ndarray:
    """Boxes (x, y, w, h) in source pixels, float, shaped (len(frames), 4).

    `name` is the video's file name, for messages. Raises JobError(unsupported_input) when
    the photo has no face, no checked frame of the video has one, or the first frame with
    faces has fewer than face_index + 1.
    """
    n = len(frames)
    if n == 0:
        raise ValueError("track_faces needs at least one frame")
    if stride < 1 or face_index < 0:
        raise ValueError(f"stride must be >= 1 and face_index >= 0, got {stride}, {face_index}")
    checked = sorted(set(range(0, n, stride)) | {n - 1})
    report_every = max(1, len(checked) // PROGRESS_REPORTS)

    found: dict[int, Box] = {}  # frame -> the followed face's detection
    last_found = -1
    for done, index in enumerate(checked, start=1):
        boxes = detector.detect(frames[index])
        if not boxes and n == 1:
            boxes = detector.detect(frames[index], long_side=PHOTO_RETRY_LONG_SIDE, min_share=0)
        if not found and boxes:
            found[index] = _pick(boxes, face_index, index)
            last_found = index
        elif found:
            match = _nearest(found[last_found], boxes, index - last_found)
            if match is not None:
                found[index] = match
                last_found = index
        if progress is not None and (done % report_every == 0 or done == len(checked)):
            progress(done, len(checked))

    if not found:
        raise _no_face(n, len(checked), stride, name)
    return _as_boxes(_smooth(_fill(found, n), SMOOTH_SIGMA_FRAMES))


def _pick(boxes: list[Box], face_index: int, frame: int) -> Box:
    if face_index < len(boxes):
        return boxes[face_index]
    faces = "only 1 face was" if len(boxes) == 1 else f"only {len(boxes)} faces were"
    raise JobError(ErrorCode.UNSUPPORTED_INPUT, (
        f"input face: face_index {face_index} asks for the {_ordinal(face_index + 1)} largest face, but "
        f"{faces} found in frame {frame}, the first with a face (face_index counts from 0, largest first)"))


def _nearest(previous: Box, boxes: list[Box], frames_apart: int) -> Box | None:
    """The detection that continues `previous`, or None when every face is too far or too
    different in size to be the same one."""
    side = max(previous.w, previous.h)
    reach = side * min(MAX_REACH, REACH + REACH_PER_FRAME * (frames_apart - 1))
    px, py = previous.x + previous.w / 2, previous.y + previous.h / 2
    best, best_cost = None, math.inf
    for box in boxes:
        distance = math.hypot(box.x + box.w / 2 - px, box.y + box.h / 2 - py)
        size_change = max(box.w, box.h) / side
        if distance > reach or not 1 / MAX_SIZE_CHANGE <= size_change <= MAX_SIZE_CHANGE:
            continue
        cost = distance / side + abs(math.log(size_change))
        if cost < best_cost:
            best, best_cost = box, cost
    return best


def _no_face(n: int, checked: int, stride: int, name: str | None) -> JobError:
    if n == 1:
        message = "input face: no face found in the photo (frame 0); use a clear, front-facing photo"
    else:
        looked = f" (checked every {_ordinal(stride)} frame, {checked} of them)" if stride > 1 else ""
        message = (f"input face: no face found in {name or 'the video'}: none of its {n} frames has a "
                   f"face{looked}; use a video with a clear, front-facing face")
    return JobError(ErrorCode.UNSUPPORTED_INPUT, message)


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _fill(found: dict[int, Box], n: int) -> np.ndarray:
    """Centre x, centre y, width, height for every frame, shaped (n, 4): found frames as
    detected, the others interpolated linearly, held before the first and after the last."""
    frames = np.array(sorted(found), dtype=np.float64)
    known = np.array([[b.x + b.w / 2, b.y + b.h / 2, b.w, b.h] for b in (found[int(i)] for i in frames)])
    every = np.arange(n, dtype=np.float64)
    return np.stack([np.interp(every, frames, known[:, c]) for c in range(4)], axis=1)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local linear fit around each frame, per column.

    Inside the clip it is a plain Gaussian average; at the ends the linear fit keeps a
    steadily moving face where it is instead of pulling it back toward the middle."""
    n = len(values)
    if n < 3:
        return values
    radius = min(math.ceil(3 * sigma), n - 1)
    offsets = np.arange(-radius, radius + 1)
    neighbours = np.arange(n)[:, None] + offsets[None, :]
    inside = (neighbours >= 0) & (neighbours < n)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)[None, :] * inside
    d = offsets[None, :].astype(np.float64)
    s0, s1, s2 = weights.sum(1), (weights * d).sum(1), (weights * d * d).sum(1)
    picked = values[np.clip(neighbours, 0, n - 1)]  # (n, K, C)
    y0 = (weights[..., None] * picked).sum(1)
    y1 = (weights[..., None] * d[..., None] * picked).sum(1)
    return (s2[:, None] * y0 - s1[:, None] * y1) / (s0 * s2 - s1 * s1)[:, None]


def _as_boxes(centred: np.ndarray) -> np.ndarray:
    cx, cy, w, h = centred.T
    return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
