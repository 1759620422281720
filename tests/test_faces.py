"""The face module on real pictures: the astronaut portrait scikit-image ships (public
domain), moved, doubled, hidden and shaken in photos and MP4s written to disk, through
reading, detection, tracking, timing and pasting back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from contract.errors import ErrorCode, JobError
from pipeline.faces.blend import crop_face, face_region, lower_face_mask, paste_face
from pipeline.faces.detect import Box, FaceDetector
from pipeline.faces.source import load_face_source
from pipeline.faces.timeline import source_indices
from pipeline.faces.track import track_faces
from pipeline.media import Mp4Writer

ASTRONAUT_FACE = (177, 66, 95, 95)  # x, y, w, h in the 512x512 picture
# Test videos: the astronaut shrunk to SIDE px (face about 47 px) on a grey HEIGHT x WIDTH canvas.
SIDE, HEIGHT, WIDTH = 256, 288, 352
LEFT, TOP = 20, 16


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def small_astronaut(astronaut) -> np.ndarray:
    return cv2.resize(astronaut, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


class RecordingDetector:
    """A FaceDetector that remembers what it found on each frame it was asked about."""

    def __init__(self, detector: FaceDetector):
        self.detector = detector
        self.found: list[list[Box]] = []

    def detect(self, frame: np.ndarray, **options) -> list[Box]:
        boxes = self.detector.detect(frame, **options)
        self.found.append(boxes)
        return boxes


def iou(a, b) -> float:
    ax, ay, aw, ah = (float(v) for v in a[:4])
    bx, by, bw, bh = (float(v) for v in b[:4])
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def centre_x(box) -> float:
    return float(box[0]) + float(box[2]) / 2


def scene(face: np.ndarray, dx: int = 0, dy: int = 0) -> np.ndarray:
    """The small astronaut on a grey canvas, its top-left corner at (LEFT + dx, TOP + dy)."""
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    x, y = LEFT + dx, TOP + dy
    visible = face[: HEIGHT - y, : WIDTH - x]
    frame[y : y + visible.shape[0], x : x + visible.shape[1]] = visible
    return frame


def face_in_scene(dx: int = 0, dy: int = 0) -> tuple[float, float, float, float]:
    s = SIDE / 512
    x, y, w, h = ASTRONAUT_FACE
    return LEFT + dx + x * s, TOP + dy + y * s, w * s, h * s


def blank() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), 90, np.uint8)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    with Mp4Writer(path, frames[0].shape[1], frames[0].shape[0], fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def two_faces(astronaut: np.ndarray) -> tuple[np.ndarray, tuple, tuple]:
    """The astronaut at full size and at 300 px side by side; and where each face is."""
    canvas = np.zeros((520, 900, 3), np.uint8)
    canvas[:512, :512] = astronaut
    canvas[100:400, 560:860] = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    s = 300 / 512
    x, y, w, h = ASTRONAUT_FACE
    return canvas, ASTRONAUT_FACE, (560 + x * s, 100 + y * s, w * s, h * s)


# -- detection and the photo case -----------------------------------------------------


def test_the_astronauts_face_is_found_where_it_is(astronaut, detector):
    boxes = detector.detect(astronaut)
    assert detector.name == "haar" and len(boxes) == 1
    assert iou(boxes[0], ASTRONAUT_FACE) > 0.5

    track = track_faces([astronaut], detector)
    assert track.shape == (1, 4)
    assert iou(track[0], ASTRONAUT_FACE) > 0.5


def test_a_big_frame_is_searched_small_but_boxes_come_back_in_its_own_pixels(astronaut, detector):
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 280:1000] = cv2.resize(astronaut, (720, 720), interpolation=cv2.INTER_CUBIC)
    s = 720 / 512
    x, y, w, h = ASTRONAUT_FACE
    [box] = detector.detect(frame)
    assert iou(box, (280 + x * s, y * s, w * s, h * s)) > 0.5


def test_a_small_face_in_a_big_photo_is_found_on_a_second_closer_look(astronaut, detector):
    side = 220  # a 41 px face: 20 px, too small to find, when the frame is searched 640 wide
    frame = np.full((720, 1280, 3), 60, np.uint8)
    frame[300:300 + side, 700:700 + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    assert detector.detect(frame) == []
    s = side / 512
    x, y, w, h = ASTRONAUT_FACE
    [box] = track_faces([frame], detector)
    assert iou(box, (700 + x * s, 300 + y * s, w * s, h * s)) > 0.5


@pytest.mark.parametrize("picture", ["grey", "noise"])
def test_a_photo_without_a_face_is_refused_naming_frame_0(detector, picture):
    rng = np.random.default_rng(1)
    photo = (np.full((400, 400, 3), 128, np.uint8) if picture == "grey"
             else rng.integers(0, 256, (400, 400, 3), dtype=np.uint8))
    with pytest.raises(JobError) as caught:
        track_faces([photo], detector)
    assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT
    assert "no face found in the photo (frame 0)" in caught.value.message


def test_with_two_faces_the_largest_comes_first_and_face_index_picks_the_other(astronaut, detector):
    canvas, big, small = two_faces(astronaut)
    boxes = detector.detect(canvas)
    assert len(boxes) == 2
    assert boxes[0].w * boxes[0].h > boxes[1].w * boxes[1].h
    assert iou(boxes[0], big) > 0.5 and iou(boxes[1], small) > 0.5

    assert iou(track_faces([canvas], detector)[0], big) > 0.5
    assert iou(track_faces([canvas], detector, face_index=1)[0], small) > 0.5

    with pytest.raises(JobError) as caught:
        track_faces([canvas], detector, face_index=5)
    assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT
    message = caught.value.message
    assert "only 2 faces were found in frame 0" in message and "counts from 0" in message


def test_a_yunet_model_that_is_not_there_or_not_a_model_is_refused(tmp_path):
    missing = tmp_path / "face_detection_yunet_2023mar.onnx"
    with pytest.raises(JobError) as caught:
        FaceDetector(yunet_model=missing)
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND and str(missing) in caught.value.message

    missing.write_bytes(b"not an onnx file")
    with pytest.raises(JobError) as caught:
        FaceDetector(yunet_model=missing)
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED


# -- tracking a video -----------------------------------------------------------------------


def test_a_sliding_face_in_an_mp4_is_followed_and_blank_frames_are_filled(tmp_path, small_astronaut,
                                                                          detector):
    step = 3  # px per frame
    gap = range(8, 11)
    frames = [blank() if i in gap else scene(small_astronaut, dx=step * i) for i in range(20)]
    path = write_mp4(tmp_path / "sliding.mp4", frames)

    source = load_face_source(path, max_frames=100)
    assert source.is_video and source.fps == pytest.approx(25) and len(source.frames) == 20
    assert source.frames[0].shape == (HEIGHT, WIDTH, 3) and source.frames[0].dtype == np.uint8

    reports = []
    track = track_faces(source.frames, detector, progress=lambda done, total: reports.append((done, total)))
    assert track.shape == (20, 4)
    assert reports[-1] == (20, 20)
    for i in set(range(20)) - set(gap):
        assert iou(track[i], face_in_scene(dx=step * i)) > 0.5, i
    # The blank frames sit between their neighbours, on the line the face was moving along.
    for i in gap:
        assert abs(centre_x(track[i]) - centre_x(face_in_scene(dx=step * i))) < 4, i
    assert centre_x(track[-1]) - centre_x(track[0]) == pytest.approx(step * 19, abs=6)

    # Detecting every 4th frame gives the same track, near enough, for a quarter of the work.
    recording = RecordingDetector(detector)
    strided = track_faces(source.frames, recording, stride=4)
    assert len(recording.found) == 5 + 1  # frames 0, 4, 8, 12, 16 and the last
    assert np.abs(strided - track).max() < 6


def test_a_video_with_no_face_anywhere_is_refused_naming_it(detector):
    with pytest.raises(JobError) as caught:
        track_faces([blank()] * 6, detector, name="empty-room.mp4")
    assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT
    assert "empty-room.mp4" in caught.value.message and "none of its 6 frames" in caught.value.message


def test_a_second_face_does_not_steal_the_track_while_the_first_is_hidden(astronaut, detector):
    canvas, big, small = two_faces(astronaut)
    hidden = canvas.copy()
    hidden[:, :520] = 0
    frames = [hidden if 2 <= i <= 3 else canvas for i in range(6)]
    recording = RecordingDetector(detector)
    track = track_faces(frames, recording)
    assert len(recording.found[2]) == 1  # only the small face was there to take
    for box in track:
        assert iou(box, big) > 0.5


def test_smoothing_takes_out_most_of_the_shake(small_astronaut, detector):
    rng = np.random.default_rng(7)
    shakes = rng.integers(-4, 5, size=(16, 2))
    frames = [scene(small_astronaut, dx=20 + int(sx), dy=8 + int(sy)) for sx, sy in shakes]
    recording = RecordingDetector(detector)
    track = track_faces(frames, recording)

    assert all(len(found) == 1 for found in recording.found)
    raw = np.array([[b.x + b.w / 2, b.y + b.h / 2] for [b] in recording.found])
    smooth = track[:, :2] + track[:, 2:] / 2
    raw_jitter = np.diff(raw, axis=0).var(axis=0)
    smooth_jitter = np.diff(smooth, axis=0).var(axis=0)
    print(f"frame-to-frame centre variance, x and y: raw {raw_jitter}, smoothed {smooth_jitter}")
    assert (smooth_jitter < 0.1 * raw_jitter).all()
    # ... and the face stays where it is on average.
    assert np.abs(smooth.mean(axis=0) - raw.mean(axis=0)).max() < 2


# -- crop and paste back ------------------------------------------------------------------------


def test_face_region_is_a_square_kept_inside_the_frame():
    assert face_region((100, 100, 50, 40), 640, 480) == (100, 95, 150, 145)
    x0, y0, x1, y1 = face_region((100, 100, 50, 50), 640, 480, scale=2.0, shift_down=0.1)
    assert (x1 - x0, y1 - y0) == (100, 100) and (x0 + x1) / 2 == 125 and (y0 + y1) / 2 == 135
    # Near an edge it moves in; bigger than the frame it shrinks to fit.
    assert face_region((600, -20, 80, 80), 640, 480) == (560, 0, 640, 80)
    assert face_region((0, 0, 300, 300), 400, 200, scale=1.5) == (50, 0, 250, 200)


def test_crop_face_resizes_the_region_to_the_backends_size(astronaut):
    region = face_region(ASTRONAUT_FACE, 512, 512, scale=1.3, shift_down=0.1)
    for size in (96, 256):
        crop = crop_face(astronaut, region, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    x0, y0, x1, y1 = region
    assert np.array_equal(crop_face(astronaut, region, x1 - x0), astronaut[y0:y1, x0:x1])


def test_the_mask_covers_the_mouth_and_is_zero_well_before_the_border():
    for size in (96, 256):
        mask = lower_face_mask(size)
        assert mask.shape == (size, size) and mask.dtype == np.float32
        assert mask.min() == 0.0 and mask.max() == 1.0
        assert mask[round(0.78 * size), size // 2] == 1.0  # the mouth, in a detector's box
        assert mask[round(0.3 * size), size // 2] == 0.0  # the eyes stay the source's
        band = max(2, size // 20)
        for edge in (mask[:band], mask[-band:], mask[:, :band], mask[:, -band:]):
            assert not edge.any()


def test_paste_face_changes_nothing_outside_the_mask_and_leaves_no_seam():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    before = frame.copy()
    region = face_region((200, 80, 150, 150), 640, 360, scale=1.4, shift_down=0.1)
    x0, y0, x1, y1 = region
    face = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    mask = lower_face_mask(96)

    out = paste_face(frame, face, region, mask)
    assert np.array_equal(frame, before)  # the input is not touched
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frame[outside])
    assert not np.array_equal(out[y0:y1, x0:x1], frame[y0:y1, x0:x1])

    # Where the pasted mask is zero, the result is the source byte for byte: find that
    # zero set by pasting white over black through the same mask.
    black = np.zeros_like(frame)
    weight = paste_face(black, np.full((96, 96, 3), 255, np.uint8), region, mask)[y0:y1, x0:x1, 0]
    zero = weight == 0
    assert zero[0].all() and zero[-1].all() and zero[:, 0].all() and zero[:, -1].all()
    assert np.array_equal(out[y0:y1, x0:x1][zero], frame[y0:y1, x0:x1][zero])
    assert weight.max() == 255
    # No seam: white over black rises gently from the zero edge, never in a jump.
    level = weight.astype(int)
    steps = np.abs(np.diff(level, axis=0)).max(), np.abs(np.diff(level, axis=1)).max()
    assert max(steps) <= 32, steps  # a hard-edged paste would jump by up to 255


# -- timing ---------------------------------------------------------------------------------------


def test_a_photo_shows_its_one_frame_throughout():
    assert source_indices(1, None, 5, 25) == [0] * 5
    assert source_indices(1, 30.0, 3, 25) == [0] * 3
    assert source_indices(40, None, 4, 25, mode="loop") == [0] * 4


def test_pingpong_and_loop_fold_the_video_at_its_ends():
    assert source_indices(4, 25, 12, 25) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert source_indices(4, 25, 10, 25, mode="loop") == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert source_indices(2, 25, 5, 25) == [0, 1, 0, 1, 0]
    assert source_indices(100, 25, 5, 25, mode="trim") == [0, 1, 2, 3, 4]
    assert source_indices(4, 25, 0, 25) == []
    with pytest.raises(ValueError):
        source_indices(4, 25, 10, 25, mode="bounce")


def test_a_30fps_face_plays_at_its_own_speed_in_a_25fps_output():
    indices = source_indices(300, 30.0, 250, 25.0)
    assert indices[:7] == [0, 1, 2, 3, 4, 6, 7]
    assert indices[25] == 30 and indices[-1] == 298  # one second in, and 249/25 s in
    assert source_indices(300, 25.0, 250, 25.0) == list(range(250))
    assert source_indices(10, 12.5, 6, 25.0) == [0, 0, 1, 1, 2, 2]  # slow source: frames held


# -- reading the face input -------------------------------------------------------------------------


def test_a_png_photo_is_one_frame(tmp_path, astronaut):
    path = tmp_path / "portrait.png"
    Image.fromarray(astronaut).save(path)
    source = load_face_source(path, max_frames=10)
    assert (source.is_video, source.fps, source.name) == (False, None, "portrait.png")
    assert len(source.frames) == 1 and np.array_equal(source.frames[0], astronaut)
    assert load_face_source(path, max_frames=10, max_side=256).frames[0].shape == (256, 256, 3)


def test_a_jpeg_is_turned_upright_by_its_exif_orientation(tmp_path, astronaut, detector):
    upright = astronaut[:, 56:456]  # 512 high, 400 wide
    sideways = np.rot90(upright)  # stored turned a quarter counter-clockwise ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and tagged "turn a quarter clockwise to show"
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.ascontiguousarray(sideways)).save(path, quality=95, exif=exif)

    [frame] = load_face_source(path, max_frames=10).frames
    assert frame.shape == (512, 400, 3)
    assert np.abs(frame.astype(int) - upright).mean() < 4
    [box] = detector.detect(frame)
    assert iou(box, (177 - 56, 66, 95, 95)) > 0.5


def test_an_animated_gif_is_a_photo_of_its_first_frame(tmp_path, small_astronaut):
    path = tmp_path / "wave.gif"
    first, second = Image.fromarray(small_astronaut), Image.fromarray(small_astronaut[::-1])
    first.save(path, save_all=True, append_images=[second], duration=100)
    source = load_face_source(path, max_frames=10)
    assert not source.is_video and len(source.frames) == 1
    assert source.frames[0].shape == (SIDE, SIDE, 3)


def test_a_long_video_keeps_its_first_max_frames(tmp_path, small_astronaut):
    path = write_mp4(tmp_path / "long.mp4", [scene(small_astronaut, dx=i) for i in range(12)], fps=30)
    source = load_face_source(path, max_frames=5)
    assert source.is_video and len(source.frames) == 5 and source.fps == pytest.approx(30)
    assert source.name == "long.mp4" and source.frames[0].shape == (HEIGHT, WIDTH, 3)

    shrunk = load_face_source(path, max_frames=5, max_side=WIDTH // 2)
    assert len(shrunk.frames) == 5 and shrunk.frames[0].shape == (HEIGHT // 2, WIDTH // 2, 3)


@pytest.mark.parametrize("name, content", [
    ("clip.mp4", bytes(range(256)) * 40),
    ("half.jpg", "truncated jpeg"),
    ("empty.png", b""),
    ("notes.txt", b"Dear face detector,\nthis is not a face.\n" * 30),
])
def test_a_file_that_is_no_picture_is_refused_naming_it(tmp_path, astronaut, name, content):
    path = tmp_path / name
    if content == "truncated jpeg":
        Image.fromarray(astronaut).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:4000])
    else:
        path.write_bytes(content)
    with pytest.raises(JobError) as caught:
        load_face_source(path, max_frames=10)
    assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT
    message = caught.value.message
    assert message.startswith(f"input face: {name} is not a readable image or video (")
    assert str(tmp_path) not in message  # the host's folders are not the user's business
