"""Wav2Lip (Prajwal et al. 2020, Rudrabha/Wav2Lip): the published network, written here so the
released `wav2lip.pth` / `wav2lip_gan.pth` load into it with strict key matching.

The network takes a 96×96 face whose lower half is blanked, stacked with an unblanked
reference of the same face (6 channels), and 200 ms of mel spectrogram (1×80×16). A face
encoder (96 → 1 pixel, skip features kept), an audio encoder (80×16 → 512×1×1) and a
decoder that climbs back to 96×96 through the skips give a sigmoid image. It was trained on
OpenCV (BGR) crops, so `sync` flips RGB to BGR on the way in and back on the way out.

Module names follow the published ones exactly (`face_encoder_blocks.N.M.conv_block.{0,1}`,
`audio_encoder.N.conv_block.*`, `face_decoder_blocks.*`, `output_block.{0,1}`): the state
dict keys are the published checkpoint's.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract.errors import ErrorCode, JobError
from pipeline.lipsync import mel
from contract.lipsync_folders import wav2lip_checkpoint

FACE_SIZE = 96


class ConvBlock(nn.Module):
    """conv → batch norm (→ + input, when `residual`) → ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int] = 1, padding: int = 1,
                 residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


class ConvTransposeBlock(nn.Module):
    """transposed conv → batch norm → ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _residuals(channels: int, count: int) -> list[nn.Module]:
    return [ConvBlock(channels, channels, 3, residual=True) for _ in range(count)]


def _down(cin: int, cout: int, residuals: int, stride: int | tuple[int, int] = 2) -> list[nn.Module]:
    """A 3×3 conv that changes channels (and strides), then `residuals` residual 3×3 convs."""
    return [ConvBlock(cin, cout, 3, stride), *_residuals(cout, residuals)]


def _up(cin: int, cout: int, residuals: int) -> nn.Sequential:
    """A stride-2 transposed conv that doubles the size, then `residuals` residual 3×3 convs."""
    return nn.Sequential(ConvTransposeBlock(cin, cout, 3, 2, 1, output_padding=1), *_residuals(cout, residuals))


def _to_one_pixel(cin: int) -> list[nn.Module]:
    """3×3 → 1×1 with 512 channels: an unpadded 3×3 conv, then a 1×1 conv."""
    return [ConvBlock(cin, 512, 3, padding=0), ConvBlock(512, 512, 1, padding=0)]


class Wav2Lip(nn.Module):
    def __init__(self):
        super().__init__()
        # Face: 6×96×96 → 16×96 → 32×48 → 64×24 → 128×12 → 256×6 → 512×3 → 512×1 (each block's
        # output is also a skip into the decoder).
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, padding=3)),
            nn.Sequential(*_down(16, 32, 2)),
            nn.Sequential(*_down(32, 64, 3)),
            nn.Sequential(*_down(64, 128, 2)),
            nn.Sequential(*_down(128, 256, 2)),
            nn.Sequential(*_down(256, 512, 1)),
            nn.Sequential(*_to_one_pixel(512)),
        ])
        # Audio: 1×80×16 → 32×80×16 → 64×27×16 → 128×9×6 → 256×3×3 → 512×1×1, one flat sequence.
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3), *_residuals(32, 2),
            *_down(32, 64, 2, stride=(3, 1)),
            *_down(64, 128, 2, stride=3),
            *_down(128, 256, 1, stride=(3, 2)),
            *_to_one_pixel(256),
        )
        # Decoder: from the audio embedding; every block's output is concatenated with the face
        # encoder's skip of the same size before the next block (hence the odd input widths).
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, padding=0)),  # 1×1, + skip 512
            nn.Sequential(ConvTransposeBlock(1024, 512, 3, 1, 0), *_residuals(512, 1)),  # 3×3, + skip 512
            _up(1024, 512, 2),  # 6×6, + skip 256
            _up(768, 384, 2),  # 12×12, + skip 128
            _up(512, 256, 2),  # 24×24, + skip 64
            _up(320, 128, 2),  # 48×48, + skip 32
            _up(160, 64, 2),  # 96×96, + skip 16
        ])
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3), nn.Conv2d(32, 3, 1), nn.Sigmoid())

    def forward(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """mels (B, 1, 80, 16), faces (B, 6, 96, 96) in [0, 1] → (B, 3, 96, 96) in [0, 1]."""
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mels)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


def run_dtype(requested: torch.dtype | None, device: str) -> torch.dtype:
    """The precision to run in. Default (None): float16 on a GPU; bfloat16 on a CPU whose
    oneDNN has native bfloat16 (AVX512-BF16/AMX: 2.7–3× float32's frames/s on this project's
    2-core CI machine, within one level of 255 of it), else float32. float16 on a CPU
    becomes float32 (no fast kernels there)."""
    on_gpu = device.startswith("cuda")
    if requested is None:
        if on_gpu:
            return torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    if requested == torch.float16 and not on_gpu:
        return torch.float32
    return requested


class Wav2LipModel:
    """The `LipSync` backend around a loaded `Wav2Lip`."""

    backend = "wav2lip"
    face_size = FACE_SIZE

    def __init__(self, net: Wav2Lip, device: str, dtype: torch.dtype | None = None, source: Path | None = None):
        self.net = net.eval()
        self.components = {"wav2lip": self.net}
        self.source = source
        self.requested_dtype = dtype
        self.device = device
        self.dtype = torch.float32
        self.to(device)

    def to(self, device: str) -> None:
        self.dtype = run_dtype(self.requested_dtype, str(device))
        # channels_last: oneDNN's fast convolution layout on CPUs (+35 % in float32 here).
        layout = torch.channels_last if not str(device).startswith("cuda") else torch.contiguous_format
        self.net.to(device=device, dtype=self.dtype, memory_format=layout)
        self.device = device

    def audio_features(self, audio: np.ndarray, fps: float, frames: int) -> np.ndarray:
        """(frames, 80, 16) float32 mel windows; the audio is cut or padded to frames / fps."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if frames <= 0:
            return np.zeros((0, mel.N_MELS, mel.WINDOW), dtype=np.float32)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not np.isfinite(audio).all():
            raise JobError(ErrorCode.UNSUPPORTED_INPUT, "the speech audio holds NaN or infinite samples")
        return mel.frame_windows(mel.melspectrogram(mel.fit_to_frames(audio, fps, frames)), fps, frames)

    def sync(self, faces: np.ndarray, features) -> np.ndarray:
        """faces uint8 (B, 96, 96, 3) RGB, features B × (80, 16) → uint8 (B, 96, 96, 3) RGB."""
        faces = np.asarray(faces)
        windows = np.asarray(features, dtype=np.float32)
        size = self.face_size
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
            raise ValueError(f"faces must be uint8 (B, {size}, {size}, 3), got {faces.dtype} {faces.shape}")
        if windows.shape != (len(faces), mel.N_MELS, mel.WINDOW):
            raise ValueError(f"features must be {len(faces)} × ({mel.N_MELS}, {mel.WINDOW}), got {windows.shape}")
        if len(faces) == 0:
            return faces.copy()
        with torch.inference_mode():
            bgr = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1])).to(self.device)
            bgr = bgr.permute(0, 3, 1, 2).to(self.dtype) / 255.0  # NHWC memory: channels_last already
            masked = bgr.clone()
            masked[:, :, size // 2:] = 0  # the lower half is what the model redraws
            mels = torch.from_numpy(windows).to(self.device, self.dtype).unsqueeze(1)
            out = self.net(mels, torch.cat((masked, bgr), dim=1))
            # Rounded where the original truncates: in float16 truncation loses a level for half the values.
            out = (out.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
            return out.permute(0, 2, 3, 1).flip(-1).cpu().numpy()


def load_wav2lip(folder: Path, device: str, dtype: torch.dtype | None = None) -> Wav2LipModel:
    """The Wav2Lip in `folder` (a checked wav2lip layout), on `device`."""
    folder = Path(folder)
    path = wav2lip_checkpoint(folder.name, folder)
    net = Wav2Lip()
    net.load_state_dict(_state_dict(path, net), strict=True)
    return Wav2LipModel(net, device, dtype, source=path)


def _read(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # the restricted unpickler refused something (or the file is garbage: the retry tells)
    except Exception as exc:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED,
                       f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None
    try:
        # Files re-saved by other tools may hold objects the restricted unpickler refuses (an
        # argparse Namespace, numpy scalars); the file is the operator's own model, trusted as such.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED,
                       f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None


def _state_dict(path: Path, net: Wav2Lip) -> dict:
    """The checkpoint's weights, `module.`-prefix stripped, checked against `net`'s keys and shapes."""
    checkpoint = _read(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        weights = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        weights = checkpoint  # a bare state dict, as some re-uploads have it
    else:
        found = f"keys {sorted(map(str, checkpoint))[:8]}" if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"{path} holds no Wav2Lip 'state_dict' (found {found})")
    # Trained under DataParallel, a checkpoint's keys start with "module.".
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    expected = net.state_dict()
    # torch fills in batch-norm counters a file from before torch 0.4.1 lacks (unused in eval).
    missing = sorted(k for k in expected.keys() - weights.keys() if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(weights.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & weights.keys()
                        if not isinstance(weights[k], torch.Tensor) or weights[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if mismatched:
        shapes = [f"{k} {tuple(getattr(weights[k], 'shape', ()))} vs {tuple(expected[k].shape)}" for k in mismatched]
        problems.append(f"{len(mismatched)} tensors of the wrong shape ({_first(shapes)})")
    if problems:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, (
            f"{path} does not match the Wav2Lip network ({len(expected)} tensors): {'; '.join(problems)}"))
    return weights


def _first(items: list[str], count: int = 3) -> str:
    return ", ".join(items[:count]) + (", …" if len(items) > count else "")
