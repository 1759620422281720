"""Speech for a job, the same for every kind that speaks (tts, narrated-video, talking-head):
at accept time `check_speech` (the voice exists, the text says something, cloning only with
a model that can); when it runs, `job_speech`: resolve the voice (configured, espeak-ng or
coqui), normalize the text, load the engine, clone from a reference recording when there is
one (decoded by pipeline.media and handed to coqui as a plain WAV: coqui's own loaders
would let FFmpeg guess its format, and a guessing FFmpeg follows playlists), speak with
progress. The host's voices come in explicitly (a VoiceBook): the daemon's
at accept time, `ctx.voices` when the job runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from contract.errors import ErrorCode, JobError

if TYPE_CHECKING:
    from contract.voices import VoiceBook
    from pipeline.context import JobContext
    from pipeline.speech.interface import Speech, VoiceChoice

SENTENCE_PAUSE_SECONDS = 0.25
MAX_SENTENCE_CHARS = 400
MAX_REFERENCE_SECONDS = 120  # of a recording to clone; speaker encoders need far less
CLONING_MESSAGE = (
    'voice cloning needs a coqui voice ([voices.NAME] engine = "coqui" with a cloning model); '
    "this host has none, so inputs.reference_audio cannot be used"
)


def check_speech(text: str, voice: str | None, language: str | None, voices: VoiceBook, cloning: bool) -> None:
    """At accept time, without torch: the text has something to speak, the voice exists on
    this host, and `cloning` (an input reference_audio) only with a coqui model that can.
    Raises ValueError (or JobError: model_not_found, internal) with a message for the user."""
    from pipeline.speech.sentences import split_sentences

    if not split_sentences(text, language or "en", MAX_SENTENCE_CHARS):
        raise ValueError("params.text: has nothing to speak (no letters or digits)")
    from pipeline.speech.engine import resolve_voice

    try:
        choice = resolve_voice(voice, language, voices)
        if cloning and choice.engine != "coqui":
            raise ValueError(CLONING_MESSAGE)
        if cloning:
            from pipeline.speech.coqui import CoquiEngine

            if not CoquiEngine(choice.model).can_clone():  # files only: no torch at accept
                raise ValueError(f"inputs.reference_audio: the coqui model {choice.model} cannot clone a voice "
                                 "(it has no speaker encoder: model_se.pth + config_se.json, or XTTS)")
    except (ValueError, JobError):
        raise
    except Exception as exc:  # noqa: BLE001 - the daemon's intake must get a JobError, never a crash
        raise JobError(ErrorCode.INTERNAL, f"checking the voice failed: {type(exc).__name__}: {exc}") from None


def plain_wav(ctx: JobContext, recording: Path) -> Path:
    """A recording (any audio input vidspool accepts) as a mono 16-bit WAV in the job's
    scratch folder, its first MAX_REFERENCE_SECONDS; JobError(unsupported_input) if refused."""
    from pipeline import media
    from pipeline.speech import audio_out

    samples = media.load_audio(recording, max_seconds=MAX_REFERENCE_SECONDS)
    return audio_out.write_audio(samples.mean(axis=0), media.AUDIO_RATE, ctx.results_dir / ".reference.wav", "wav")


@dataclass
class JobSpeech:
    speech: Speech
    choice: VoiceChoice
    text: str  # what was spoken (normalized when asked)
    synthesis_seconds: float


def job_speech(ctx: JobContext, text: str, voice: str | None, language: str | None, speed: float,
               normalize: bool, reference: Path | None, progress_span: tuple[float, float]) -> JobSpeech:
    """Speaks `text` for a job in a voice of `ctx.voices`; progress goes from span[0] to span[1]
    in stage `speech`."""
    from contract.voices import base_language
    from pipeline.speech.engine import get_engine, resolve_voice, speak

    low, high = progress_span
    ctx.progress(low, stage="speech", message="preparing the text")
    try:
        choice = resolve_voice(voice, language, ctx.voices)
    except ValueError as exc:
        raise JobError(ErrorCode.INVALID_JOB, str(exc)) from None
    text = text.replace("\x00", " ")
    if normalize:
        from pipeline.speech.normalize import normalize as to_words

        text = to_words(text, base_language(choice.language))
    engine = get_engine(choice.engine, choice.model, ctx.device)
    reference = reference or (Path(choice.reference_audio) if choice.reference_audio else None)
    if choice.engine == "coqui":
        from pipeline.speech.coqui import ClonedVoice

        if reference is not None:
            reference = plain_wav(ctx, reference)
        ctx.progress(low, stage="speech", message="loading the coqui model")
        try:  # loads now (model_not_found / model_load_failed) and checks speaker and language
            choice = replace(choice, language=engine.resolve_language(language or choice.language))
            if reference is None:
                choice = replace(choice, voice=engine.resolve_speaker(choice.voice))
            else:
                choice = replace(choice, voice="cloned")
                engine = ClonedVoice(engine, reference)
        except ValueError as exc:
            raise JobError(ErrorCode.INVALID_JOB, str(exc)) from None

    from pipeline.context import StepReporter

    report = StepReporter(ctx)

    def on_progress(done: int, total: int) -> None:
        report(low + (high - low) * done / total, done, total, "speech", f"sentence {done}/{total}")

    started = time.monotonic()
    try:
        speech = speak(engine, text, choice.language, choice.voice, speed,
                       pause_seconds=SENTENCE_PAUSE_SECONDS, max_chars=MAX_SENTENCE_CHARS, progress=on_progress)
    except ValueError as exc:
        raise JobError(ErrorCode.INVALID_JOB, f"params.text: {exc}") from None
    return JobSpeech(speech, choice, text, time.monotonic() - started)
