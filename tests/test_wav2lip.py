"""wav2lip: the lip-sync backend, loaded from a random-weight folder with the published layout.

The folders come from scripts/tiny_wav2lip.py: the full-size network with random weights,
saved the way Wav2Lip's training script saves a checkpoint. The network's keys and shapes
are checked against facts read off the published source (Rudrabha/Wav2Lip at 5c90fa9,
models/wav2lip.py and models/conv.py, unchanged since 2020): a released checkpoint loads
into it only if they match. The weights are random, so the tests check shapes, dtypes,
determinism and the plumbing around the network (colour order, mask, mel windows), not lips.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util

import librosa
import numpy as np
import pytest
import torch

from contract.errors import ErrorCode, JobError
from contract import lipsync_folders as layout
from pipeline.lipsync import base, mel
from pipeline.lipsync.wav2lip import Wav2Lip, Wav2LipModel, load_wav2lip
from tests.support import REPO

_spec = importlib.util.spec_from_file_location("tiny_wav2lip", REPO / "scripts" / "tiny_wav2lip.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

# Read off Wav2Lip().state_dict() built from the published source (BatchNorm2d counts
# num_batches_tracked, as torch has since 0.4.1 and the released files, torch 1.x, have).
PARAMETERS = 36_298_035
TENSORS = 352  # 101 conv weight/bias pairs, 50 batch norms × 5
BATCH_NORMS = 50
TENSORS_PER_PART = {"face_encoder_blocks": 126, "audio_encoder": 91, "face_decoder_blocks": 126, "output_block": 9}
KNOWN_SHAPES = {
    "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
    "face_encoder_blocks.2.3.conv_block.1.running_var": (64,),
    "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
    "audio_encoder.0.conv_block.0.weight": (32, 1, 3, 3),
    "audio_encoder.11.conv_block.0.weight": (512, 256, 3, 3),
    "audio_encoder.12.conv_block.1.num_batches_tracked": (),
    "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),  # ConvTranspose2d: (in, out, k, k)
    "face_decoder_blocks.6.2.conv_block.1.running_mean": (64,),
    "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
    "output_block.1.weight": (3, 32, 1, 1),
    "output_block.1.bias": (3,),
}
# sha256 of "key (shape)" lines, in state-dict order, of the published Wav2Lip().
KEYS_AND_SHAPES_SHA256 = "e4f1ef37a3fc50fac4b37920babfcb3edecbe19416e64dab87a4c953d6e9c021"


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    dest = tmp_path_factory.mktemp("wav2lip")
    return {
        "prefixed": tiny.build(dest / "prefixed"),  # wav2lip.pth, keys "module.…"
        "gan": tiny.build(dest / "gan", seed=1, gan=True, prefixed=False),  # wav2lip_gan.pth, bare keys
    }


@pytest.fixture(scope="session")
def checkpoint(folders):
    return torch.load(folders["gan"] / "wav2lip_gan.pth", weights_only=True)


@pytest.fixture(scope="session")
def model(folders):
    return load_wav2lip(folders["prefixed"], "cpu")


def model_folder(folder, contents, name="wav2lip.pth", **save):
    folder.mkdir(parents=True)
    torch.save(contents, folder / name, **save)
    return folder


def load_failure(folder) -> JobError:
    with pytest.raises(JobError) as caught:
        load_wav2lip(folder, "cpu")
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED
    return caught.value


# -- the network ---------------------------------------------------------------------------
def test_network_has_the_published_keys_and_shapes():
    net = Wav2Lip()
    state = net.state_dict()
    assert len(state) == TENSORS
    assert sum(k.endswith(".num_batches_tracked") for k in state) == BATCH_NORMS
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS
    assert {part: sum(k.startswith(part + ".") for k in state) for part in TENSORS_PER_PART} == TENSORS_PER_PART
    assert {k: tuple(state[k].shape) for k in KNOWN_SHAPES} == KNOWN_SHAPES
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    assert hashlib.sha256(lines.encode()).hexdigest() == KEYS_AND_SHAPES_SHA256


def test_tiny_folder_has_the_published_file_layout(folders, checkpoint):
    assert layout.check_folder("tiny", folders["prefixed"], None) == "wav2lip"
    assert layout.check_folder("tiny", folders["gan"], None) == "wav2lip"
    # What Wav2Lip's save_checkpoint writes.
    assert set(checkpoint) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert list(checkpoint["state_dict"]) == list(Wav2Lip().state_dict())
    prefixed = torch.load(folders["prefixed"] / "wav2lip.pth", weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in prefixed)
    # A second build with the same options reuses the folder.
    before = (folders["gan"] / "wav2lip_gan.pth").stat().st_mtime_ns
    tiny.build(folders["gan"], seed=1, gan=True, prefixed=False)
    assert (folders["gan"] / "wav2lip_gan.pth").stat().st_mtime_ns == before


# -- loading ---------------------------------------------------------------------------------
def test_loads_with_and_without_the_module_prefix(folders, checkpoint, model):
    assert (model.backend, model.face_size, list(model.components)) == ("wav2lip", 96, ["wav2lip"])
    assert model.source == folders["prefixed"] / "wav2lip.pth"
    assert not model.net.training  # batch norm must use its running statistics

    gan = base.load("wav2lip", folders["gan"], "cpu", torch.float32)  # as stored: compare exactly
    assert isinstance(gan, Wav2LipModel) and gan.source.name == "wav2lip_gan.pth"
    loaded = gan.components["wav2lip"].state_dict()
    for key in KNOWN_SHAPES:
        assert torch.equal(loaded[key], checkpoint["state_dict"][key])
    assert not torch.equal(loaded["output_block.1.weight"], model.net.state_dict()["output_block.1.weight"])  # seeds


def test_loads_older_formats_and_files_with_extra_objects(tmp_path, checkpoint):
    def same_weights(model) -> bool:  # loaded in float32: as stored, compared exactly
        loaded = model.net.state_dict()
        return all(torch.equal(loaded[key], checkpoint["state_dict"][key]) for key in KNOWN_SHAPES)

    # Files saved by torch < 1.6 (as Wav2Lip's were) use the legacy format.
    assert same_weights(load_wav2lip(model_folder(tmp_path / "legacy", checkpoint, _use_new_zipfile_serialization=False), "cpu", torch.float32))
    # Batch norms saved before torch 0.4.1 have no counters; torch fills them in.
    counted = {k: v for k, v in checkpoint["state_dict"].items() if not k.endswith("num_batches_tracked")}
    assert same_weights(load_wav2lip(model_folder(tmp_path / "uncounted", {"state_dict": counted}), "cpu", torch.float32))
    # An object the restricted unpickler refuses: loaded anyway (the file is the operator's own).
    extra = {**checkpoint, "args": argparse.Namespace(batch_size=16)}
    assert same_weights(load_wav2lip(model_folder(tmp_path / "extra", extra), "cpu", torch.float32))


def test_corrupt_checkpoint_fails_naming_the_file(tmp_path, folders):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "wav2lip.pth").write_bytes(b"<html>Google Drive - virus scan warning</html>" * 50)
    assert str(garbage / "wav2lip.pth") in load_failure(garbage).message

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    with open(folders["prefixed"] / "wav2lip.pth", "rb") as f:
        (truncated / "wav2lip.pth").write_bytes(f.read(1_000_000))
    assert str(truncated / "wav2lip.pth") in load_failure(truncated).message


def test_checkpoint_that_does_not_match_fails(tmp_path, checkpoint):
    weights = dict(checkpoint["state_dict"])
    del weights["audio_encoder.3.conv_block.0.bias"]
    weights["output_block.1.weight"] = torch.zeros(4, 32, 1, 1)
    error = load_failure(model_folder(tmp_path / "edited", {"state_dict": weights}))
    assert "wav2lip.pth" in error.message
    assert "1 missing keys (audio_encoder.3.conv_block.0.bias)" in error.message
    assert "output_block.1.weight (4, 32, 1, 1) vs (3, 32, 1, 1)" in error.message

    other = {"state_dict": {"encoder.conv.weight": torch.zeros(8, 3, 3, 3)}}
    error = load_failure(model_folder(tmp_path / "other", other))
    assert f"{TENSORS - BATCH_NORMS} missing keys" in error.message and "1 unexpected keys (encoder.conv.weight)" in error.message

    error = load_failure(model_folder(tmp_path / "list", [1, 2, 3]))
    assert "no Wav2Lip 'state_dict'" in error.message


def test_empty_folder_is_not_a_model(tmp_path):
    with pytest.raises(JobError) as caught:
        layout.check_folder("empty", tmp_path, None)
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
    with pytest.raises(JobError) as caught:
        load_wav2lip(tmp_path, "cpu")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND


# -- audio -----------------------------------------------------------------------------------
def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * mel.SAMPLE_RATE)) / mel.SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_mel_of_a_tone():
    spectrogram = mel.melspectrogram(tone(1.0))
    assert spectrogram.shape == (80, 81) and spectrogram.dtype == np.float32
    assert spectrogram.min() >= -4 and spectrogram.max() <= 4
    # Loudest in the mel band around 440 Hz (80 slaney bands, 55-7600 Hz).
    centres = librosa.mel_frequencies(82, fmin=55, fmax=7600)[1:-1]
    assert spectrogram.mean(axis=1).argmax() == np.abs(centres - 440).argmin()
    assert (mel.melspectrogram(np.zeros(8000, dtype=np.float32)) == -4).all()  # silence is the floor


@pytest.mark.parametrize("seconds", [0.5, 0.97, 1.0, 1.03, 2.0, 0.01])
def test_audio_features_give_one_window_per_frame(model, seconds):
    features = model.audio_features(tone(seconds), fps=25, frames=25)
    assert features.shape == (25, 80, 16) and features.dtype == np.float32
    assert -4 <= features.min() and features.max() <= 4


def test_audio_features_are_the_originals_windows(model):
    audio = tone(1.0)
    spectrogram = mel.melspectrogram(audio)
    features = model.audio_features(audio, fps=25, frames=25)
    # Frame i starts at column int(i * 3.2); from frame 21 on, a window would pass column 81,
    # and the original takes the last 16 columns instead.
    assert np.array_equal(features[0], spectrogram[:, 0:16])
    assert np.array_equal(features[20], spectrogram[:, 64:80])
    assert all(np.array_equal(features[i], spectrogram[:, 65:81]) for i in range(21, 25))
    assert model.audio_features(audio, fps=30, frames=0).shape == (0, 80, 16)


def test_audio_that_is_not_numbers_is_refused(model):
    with pytest.raises(JobError) as caught:
        model.audio_features(np.full(1600, np.nan, dtype=np.float32), fps=25, frames=3)
    assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT


# -- sync ------------------------------------------------------------------------------------
def faces(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)


def test_sync_returns_faces_of_the_same_shape(model):
    crops = faces(3)
    features = model.audio_features(tone(0.2), fps=25, frames=3)
    out = model.sync(crops, features)
    assert out.shape == (3, 96, 96, 3) and out.dtype == np.uint8
    assert np.array_equal(out, model.sync(crops, list(features)))  # deterministic, any sequence
    assert np.array_equal(out[1], model.sync(crops[1:2], features[1:2])[0])  # batch-independent
    with pytest.raises(ValueError):
        model.sync(crops[:, :64, :64], features)
    with pytest.raises(ValueError):
        model.sync(crops, features[:2])


class MaskedInput(torch.nn.Module):
    """Stands in for the network: returns the masked copy it was given, as an image."""

    def forward(self, mels, stacked):
        assert mels.shape == (len(stacked), 1, 80, 16) and stacked.shape[1:] == (6, 96, 96)
        assert float(stacked.max()) <= 1.0
        return stacked[:, :3]


def test_sync_feeds_the_network_bgr_with_the_lower_half_blanked():
    crops = faces(2, seed=3)
    out = Wav2LipModel(MaskedInput(), "cpu").sync(crops, np.zeros((2, 80, 16), dtype=np.float32))
    # The masked copy, flipped back to RGB: the upper half comes back exactly, the lower is black.
    assert np.array_equal(out[:, :48], crops[:, :48])
    assert not out[:, 48:].any()


def test_cpu_default_precision_and_its_cost_in_accuracy(folders):
    """Default: bfloat16 where the CPU has native bfloat16 (2.7–3× the frames/s), else
    float32; float16 on a CPU means float32. bfloat16 stays within a few levels of float32."""
    from pipeline.lipsync.wav2lip import run_dtype

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert run_dtype(None, "cpu") == (torch.bfloat16 if native else torch.float32)
    assert run_dtype(None, "cuda:0") == torch.float16 and run_dtype(torch.float16, "cpu") == torch.float32
    full = load_wav2lip(folders["prefixed"], "cpu", torch.float32)
    bf16 = load_wav2lip(folders["prefixed"], "cpu", torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and next(bf16.net.parameters()).dtype == torch.bfloat16
    faces, windows = np.random.default_rng(3).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8), np.zeros((4, 80, 16), np.float32)
    a, b = full.sync(faces, windows).astype(np.int16), bf16.sync(faces, windows).astype(np.int16)
    assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.5
