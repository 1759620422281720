"""What a speech engine is and what speaking makes: the types the engines (espeak.py,
coqui.py) and `engine.speak` share. Imports nothing of the engines, so they import it
without a loop.

An engine turns one short text (a sentence) into mono float32 samples:

    class SpeechEngine(Protocol):
        name: str
        def languages(self) -> list[str]: ...
        def voices(self) -> list[VoiceInfo]: ...
        def synthesize(self, text, language, voice, speed) -> (samples, sample_rate)

`synthesize` may also return `(samples, sample_rate, words)`, where `words` are
`(word, start_s, end_s)` within those samples, when the engine knows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from contract.voices import VoiceInfo

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Segment", "Speech", "SpeechEngine", "VoiceChoice", "VoiceInfo", "Word"]


class Word(NamedTuple):
    text: str
    start: float
    end: float


class Segment(NamedTuple):
    """One sentence on the track: what was spoken, from `start` to `end` seconds."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


@dataclass
class Speech:
    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int
    segments: list[Segment] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class VoiceChoice:
    """A job's voice, resolved: which engine speaks, with which of its voices, in which language."""

    engine: str
    voice: str | None
    language: str
    model: str | None = None  # coqui: the model folder
    reference_audio: str | None = None  # a configured voice that clones this recording


@runtime_checkable
class SpeechEngine(Protocol):
    name: str

    def languages(self) -> list[str]: ...

    def voices(self) -> list[VoiceInfo]: ...

    def synthesize(self, text: str, language: str, voice: str | None, speed: float) -> tuple: ...
