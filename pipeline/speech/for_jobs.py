"""Speech for a job, the same for every kind that speaks (tts, narrated-video, …):
resolve the voice (configured, espeak-ng or coqui), normalize the text, load the engine,
clone from a reference recording when there is one, speak with progress."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ErrorCode, JobError

if TYPE_CHECKING:
    from pipeline.context import JobContext
    from pipeline.speech.engine import Speech, VoiceChoice

SENTENCE_PAUSE_SECONDS = 0.25
MAX_SENTENCE_CHARS = 400


@dataclass
class JobSpeech:
    speech: Speech
    choice: VoiceChoice
    text: str  # what was spoken (normalized when asked)
    synthesis_seconds: float


def job_speech(ctx: JobContext, text: str, voice: str | None, language: str | None, speed: float,
               normalize: bool, reference: Path | None, progress_span: tuple[float, float]) -> JobSpeech:
    """Speaks `text` for a job; progress goes from span[0] to span[1] in stage `speech`."""
    from pipeline.speech.engine import base_language, get_engine, resolve_voice, speak

    low, high = progress_span
    ctx.progress(low, stage="speech", message="preparing the text")
    try:
        choice = resolve_voice(voice, language)
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
