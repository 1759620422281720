"""`speak`, which turns a long text into one timed track, and the engine for a job's voice.

The engine interface and the track's types are in pipeline/speech/interface.py; the
engines (espeak.py, coqui.py) import only that, and this module imports them lazily, so
the imports go one way. `speak` puts the words an engine reports (see SpeechEngine) on
the track's time line in `Segment.words`; espeak-ng through its command line does not
report word times, so its segments have none.

`speak(engine, text, ...)` splits the text into paragraphs and sentences
(pipeline.speech.sentences), synthesizes each sentence, trims the silence the engine puts
around it, and joins them with `pause_seconds` of silence (twice that between
paragraphs). Each sentence becomes a `Segment(text, start, end)` on the joined track; the
first starts at 0 and the last ends with the track.

Kind modules import this module lazily (inside `run` or `check`); it imports numpy only
inside the functions that need it, so the daemon can resolve voices without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from contract.voices import DEFAULT_LANGUAGE, VoiceBook
from pipeline.speech.interface import Segment, Speech, SpeechEngine, VoiceChoice, Word

if TYPE_CHECKING:
    import numpy as np

# The track's types come with speak (callers import them from here).
__all__ = ["Segment", "Speech", "SpeechEngine", "VoiceChoice", "Word", "get_engine", "resolve_voice", "speak"]

# Silence kept around each sentence when trimming, so soft onsets and endings survive.
TRIM_MARGIN_SECONDS = 0.03
# A sample is silence when below this fraction of the sentence's peak (-40 dB) ...
TRIM_RELATIVE = 0.01
# ... or below this absolute level.
TRIM_ABSOLUTE = 1e-3


def get_engine(name: str, model: str | None = None, device: str = "cpu") -> SpeechEngine:
    """The engine called `name`: "espeak", or "coqui" with `model` (its folder), on `device`."""
    if name == "espeak":
        from pipeline.speech.espeak import EspeakEngine

        return EspeakEngine.shared()
    if name == "coqui":
        if not model:
            raise ValueError("the coqui engine needs a model folder")
        from pipeline.speech.coqui import CoquiEngine

        return CoquiEngine.shared(model, device)
    raise ValueError(f"unknown speech engine {name!r} (available: espeak, coqui)")


def resolve_voice(voice: str | None, language: str | None, voices: VoiceBook) -> VoiceChoice:
    """The engine and voice for a job's `voice` and `language` params, on a host whose
    configured voices and model folders are `voices`.

    A `[voices.NAME]` name is that configured voice. Otherwise an espeak-ng voice: "en",
    "en-us", "de+f3", "+m3" (a variant of `language`), or None (the default voice of
    `language`, else English). Raises ValueError with a message for the user when the
    voice or language is unknown, and JobError (internal) when espeak-ng is not installed.

    "coqui:/path/to/model_folder" or "coqui:/path/to/model_folder#speaker" is a coqui
    model, inside one of `voices.model_roots`. Only the folder and its config.json are
    checked here (JobError model_not_found naming the path), without loading torch; the
    speaker and language are checked when the model is loaded. The language is
    `language`, else English.
    """
    configured = voices.voice(voice)
    if configured is not None:  # [voices.NAME] in config
        language = language or configured.get("language")
        if configured.get("engine") == "coqui":
            from pipeline.speech.coqui import CoquiEngine

            CoquiEngine(configured["model"]).config()  # model_not_found / model_load_failed
            return VoiceChoice(engine="coqui", voice=configured.get("speaker"), language=language or DEFAULT_LANGUAGE,
                               model=configured["model"], reference_audio=configured.get("reference_audio"))
        voice = configured.get("voice")
    elif voice is not None and voice.startswith("coqui:"):
        from pipeline.speech.coqui import CoquiEngine, parse_voice

        folder, speaker = parse_voice(voice)
        if not folder:
            raise ValueError('a coqui voice is "coqui:/path/to/model_folder" or "coqui:/path/to/model_folder#speaker"')
        voices.check_model_folder(folder)
        CoquiEngine(folder).config()  # model_not_found / model_load_failed
        return VoiceChoice(engine="coqui", voice=speaker, language=language or DEFAULT_LANGUAGE, model=folder)
    from pipeline.speech.espeak import EspeakEngine

    engine = EspeakEngine.shared()
    voice_id, resolved_language = engine.resolve(voice, language)
    return VoiceChoice(engine=engine.name, voice=voice_id, language=resolved_language)


def speak(
    engine: SpeechEngine,
    text: str,
    language: str,
    voice: str | None = None,
    speed: float = 1.0,
    pause_seconds: float = 0.25,
    max_chars: int = 400,
    progress: Callable[[int, int], None] | None = None,
) -> Speech:
    """Synthesizes `text` sentence by sentence into one mono track with sentence timings.

    `progress(done, total)` is called before the first sentence (0, total) and after each;
    it may raise (a canceled job) to stop. Raises ValueError when the text has nothing to
    speak.
    """
    import numpy as np

    from pipeline.speech.sentences import split_paragraphs, split_sentences

    plan: list[tuple[str, bool]] = []  # (sentence, first of a new paragraph)
    for paragraph in split_paragraphs(text):
        for index, sentence in enumerate(split_sentences(paragraph, language, max_chars)):
            plan.append((sentence, index == 0 and bool(plan)))
    if not plan:
        raise ValueError("the text has nothing to speak (no letters or digits)")

    total = len(plan)
    if progress is not None:
        progress(0, total)
    chunks: list[np.ndarray] = []
    segments: list[Segment] = []
    rate: int | None = None
    position = 0  # samples so far
    for done, (sentence, new_paragraph) in enumerate(plan, start=1):
        result = engine.synthesize(sentence, language, voice, speed)
        samples, chunk_rate = result[0], int(result[1])
        words = tuple(result[2]) if len(result) > 2 and result[2] else ()
        if rate is None:
            rate = chunk_rate
        elif chunk_rate != rate:
            raise RuntimeError(f"engine {engine.name} changed its sample rate from {rate} to {chunk_rate}")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        first, last = _voiced_span(samples, rate)
        if last > first:
            if segments:
                pause = pause_seconds * (2 if new_paragraph else 1)
                gap = round(pause * rate)
                if gap:
                    chunks.append(np.zeros(gap, np.float32))
                    position += gap
            voiced = samples[first:last]
            start = position / rate
            chunks.append(voiced)
            position += len(voiced)
            offset = start - first / rate
            timed_words = tuple(
                Word(w[0], max(start, offset + w[1]), min(position / rate, offset + w[2])) for w in words
            )
            segments.append(Segment(sentence, start, position / rate, timed_words))
        if progress is not None:
            progress(done, total)

    out = np.empty(position, np.float32)
    at = 0
    for i, chunk in enumerate(chunks):  # copy and free as we go: one track's worth of memory
        out[at : at + len(chunk)] = chunk
        at += len(chunk)
        chunks[i] = None  # type: ignore[call-overload]
    return Speech(samples=out, sample_rate=rate or 22050, segments=segments)


def _voiced_span(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """[first, last) of the samples worth keeping: the sound plus a short margin of silence."""
    import numpy as np

    if not len(samples):
        return 0, 0
    magnitude = np.abs(samples)
    threshold = max(TRIM_ABSOLUTE, float(magnitude.max()) * TRIM_RELATIVE)
    loud = np.flatnonzero(magnitude > threshold)
    if not len(loud):
        return 0, 0
    margin = round(TRIM_MARGIN_SECONDS * rate)
    return max(0, int(loud[0]) - margin), min(len(samples), int(loud[-1]) + 1 + margin)
