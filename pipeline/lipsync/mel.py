"""The mel spectrogram Wav2Lip was trained on, and its per-video-frame windows.

Same numbers as Wav2Lip's audio.py with its default hparams: 16 kHz, preemphasis 0.97,
STFT n_fft 800 / hop 200 / win 800 (hann, centred, reflect padding), 80 slaney mels from
55 to 7600 Hz, dB with a -100 dB floor minus ref_level_db 20, scaled symmetrically to
[-4, 4] with clipping. One mel column is 12.5 ms, so a second has 80 columns; a video
frame i hears the 16 columns (200 ms) starting at column int(i * 80 / fps).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
COLUMNS_PER_SECOND = SAMPLE_RATE / HOP  # 80
WINDOW = 16  # mel columns per video frame
SILENCE = -MAX_ABS  # what digital silence normalizes to


def melspectrogram(audio: np.ndarray) -> np.ndarray:
    """(80, 1 + len(audio) // 200) float32 in [-4, 4] from 16 kHz mono audio."""
    import librosa

    wav = np.asarray(audio, dtype=np.float64).reshape(-1)
    # y[n] = x[n] - 0.97 x[n-1] (scipy.signal.lfilter([1, -k], [1], x), as Wav2Lip does)
    emphasized = np.concatenate([wav[:1], wav[1:] - PREEMPHASIS * wav[:-1]])
    # Spelled out where librosa's defaults moved since Wav2Lip's 0.7: centred frames were padded
    # by reflection (>= 0.10 pads zeros), and the STFT was stored as complex64.
    spectrum = np.abs(librosa.stft(y=emphasized, n_fft=N_FFT, hop_length=HOP, win_length=WIN, pad_mode="reflect",
                                   dtype=np.complex64))
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(floor, basis @ spectrum)) - REF_LEVEL_DB
    scaled = 2.0 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS
    return np.clip(scaled, -MAX_ABS, MAX_ABS).astype(np.float32)


def frame_windows(mel: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """(frames, 80, 16): frame i's window starts at int(i * 80 / fps); windows that would run
    past the end are the last 16 columns, as Wav2Lip's inference takes them."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if mel.shape[1] < WINDOW:  # under 75 ms of audio: the rest is silence
        mel = np.pad(mel, ((0, 0), (0, WINDOW - mel.shape[1])), constant_values=SILENCE)
    columns = mel.shape[1]
    step = COLUMNS_PER_SECOND / fps  # computed once, then multiplied, as the original does
    windows = np.empty((frames, mel.shape[0], WINDOW), dtype=mel.dtype)
    for i in range(frames):
        start = min(int(i * step), columns - WINDOW)
        windows[i] = mel[:, start:start + WINDOW]
    return windows


def fit_to_frames(audio: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """`audio` cut or padded with silence to the length of `frames` video frames."""
    samples = round(frames / fps * SAMPLE_RATE)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)[:samples]
    return np.pad(audio, (0, samples - len(audio)))
