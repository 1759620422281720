"""Face detection on single frames: OpenCV's bundled Haar cascades, or YuNet when a model
file is given.

Haar needs no download and finds front-facing faces well enough to place a lip-sync crop;
YuNet (`face_detection_yunet_*.onnx`, OpenCV Zoo) also finds turned and small faces. Frames
are downscaled to DETECT_LONG_SIDE for speed; boxes come back in source pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from contract.errors import ErrorCode, JobError

DETECT_LONG_SIDE = 640
# Tried in order, each on its grey image, until one finds a face. The first looks at plain
# grey: the cascade evens out each window's contrast itself, and a global equalization is
# ruled by big flat areas (a studio wall) and can wash a small face out. `alt2` on the
# equalized image is the second opinion, for faces `default` misses (dim, slightly turned).
HAAR_PASSES = (("haarcascade_frontalface_default.xml", False), ("haarcascade_frontalface_alt2.xml", True))
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 5
# Smallest face looked for, as a share of the detection image's short side (and >= 24 px,
# the cascades' window): a smaller face is too small to lip-sync anyway.
MIN_FACE_SHARE = 1 / 16
# Haar's false faces (a shirt fold, a badge) gather a handful of neighbouring windows, a
# real one dozens; a second, smaller real face gets fewer than the first. A detection with
# at least HAAR_SURE_SHARE of the best one's count is kept, one with less than
# HAAR_MIN_SHARE dropped, and one in between kept only if the other cascade agrees.
HAAR_SURE_SHARE = 0.5
HAAR_MIN_SHARE = 0.25
YUNET_SCORE_THRESHOLD = 0.7


class Box(NamedTuple):
    """A face in source pixels: top-left corner, width and height, and the detector's
    confidence (Haar: how many neighbouring windows agreed; YuNet: its score in [0, 1])."""

    x: float
    y: float
    w: float
    h: float
    score: float


class FaceDetector:
    """Finds faces in RGB frames, largest first. Build once per job; `detect` reuses the
    loaded cascades (or YuNet network) for every frame. `name` says which: "haar" or "yunet"."""

    def __init__(self, yunet_model: Path | None = None):
        self._yunet = None
        self._passes: list[tuple[cv2.CascadeClassifier, bool]] = []
        if yunet_model is not None:
            self._yunet = _load_yunet(Path(yunet_model))
            self.name = "yunet"
            return
        self.name = "haar"
        for name, equalize in HAAR_PASSES:
            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if cascade.empty():
                raise JobError(ErrorCode.INTERNAL, f"OpenCV's face cascade {name} did not load")
            self._passes.append((cascade, equalize))

    def detect(self, frame: np.ndarray, long_side: int = DETECT_LONG_SIDE, min_share: float = MIN_FACE_SHARE
               ) -> list[Box]:
        """The faces in an RGB uint8 frame (H, W, 3), largest first. Searched at most
        long_side pixels on the long side, for faces at least min_share of the short side
        there and 24 px (Haar; YuNet finds what it finds)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        small = _downscale(frame, long_side)
        boxes = self._detect_yunet(small) if self._yunet is not None else self._detect_haar(small, min_share)
        sx, sy = frame.shape[1] / small.shape[1], frame.shape[0] / small.shape[0]
        boxes = [Box(b.x * sx, b.y * sy, b.w * sx, b.h * sy, b.score) for b in boxes]
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)

    def _detect_haar(self, rgb: np.ndarray, min_share: float) -> list[Box]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        side = max(24, round(min(gray.shape) * min_share))
        for cascade, equalize in self._passes:
            image = cv2.equalizeHist(gray) if equalize else gray
            rects, neighbours = cascade.detectMultiScale2(
                image, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(side, side)
            )
            if len(rects):
                return self._likely_faces(cascade, image, rects, np.ravel(neighbours))
        return []

    def _likely_faces(self, found_by, image: np.ndarray, rects: np.ndarray, neighbours: np.ndarray) -> list[Box]:
        best = neighbours.max()
        other = next(cascade for cascade, _ in self._passes if cascade is not found_by)
        return [Box(float(x), float(y), float(w), float(h), float(n))
                for (x, y, w, h), n in zip(rects, neighbours)
                if n >= HAAR_SURE_SHARE * best
                or (n >= HAAR_MIN_SHARE * best and _confirmed(other, image, (x, y, w, h)))]

    def _detect_yunet(self, rgb: np.ndarray) -> list[Box]:
        height, width = rgb.shape[:2]
        self._yunet.setInputSize((width, height))
        _, faces = self._yunet.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        # Each row: x, y, w, h, five landmarks (x, y), score.
        return [Box(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[14])) for f in faces]


def _confirmed(cascade: cv2.CascadeClassifier, image: np.ndarray, rect: tuple[int, int, int, int]) -> bool:
    """Whether `cascade` also finds a face of about that size around `rect`."""
    x, y, w, h = (int(v) for v in rect)
    margin = w // 3
    crop = image[max(0, y - margin) : y + h + margin, max(0, x - margin) : x + w + margin]
    low, high = int(w * 0.7), int(w * 1.4) + 1
    return len(cascade.detectMultiScale(crop, 1.05, 3, minSize=(low, low), maxSize=(high, high))) > 0


def _load_yunet(path: Path) -> cv2.FaceDetectorYN:
    if not path.is_file():
        raise JobError(ErrorCode.MODEL_NOT_FOUND, f"face detector: YuNet model {path} does not exist")
    try:
        return cv2.FaceDetectorYN.create(str(path), "", (320, 320), YUNET_SCORE_THRESHOLD)
    except cv2.error as e:
        reason = (e.err or str(e)).strip()
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, (
            f"face detector: {path} is not a YuNet model OpenCV can load ({reason})")) from e


def _downscale(frame: np.ndarray, long_side: int) -> np.ndarray:
    """The frame shrunk to long_side pixels on its long side; never enlarged."""
    height, width = frame.shape[:2]
    scale = long_side / max(height, width)
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
