"""tts: text to speech, with sentence timings as SubRip captions.

The text is normalized (numbers, dates, currencies, units, simple math and LaTeX become
words; `normalize: false` skips it), split into sentences (pipeline.speech.sentences),
spoken sentence by sentence and joined with short pauses (pipeline.speech.engine.speak).
Results: `speech.<format>` (wav: PCM 16-bit; mp3; m4a: AAC) and `speech.srt` (one cue per
sentence, on the audio's time line). `result.audio` has duration, sample_rate, channels and
codec; `result.speech` has the engine, voice, language, sentence count and the start of
the text as spoken.

Voices: an espeak-ng voice, "LANG" or "LANG+VARIANT" ("en", "en-us", "de+f3", "fr"), or
"+VARIANT" for a variant of `language`; or a coqui model folder, "coqui:/path/to/folder"
or "coqui:/path/to/folder#speaker" (pipeline.speech.coqui). `language` defaults to the
voice's; with neither given, English. `reference_audio` clones the voice of a recording
and needs a cloning-capable coqui model (YourTTS layout with a speaker encoder, or XTTS).
An unknown espeak voice or language, a missing coqui folder (model_not_found), empty text
and a `reference_audio` without a cloning model fail the job when it is accepted, before
any work; an unknown coqui speaker or language fails when the model is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pipeline.kinds.base import InputSpec, KindSpec
from pipeline.speech.for_jobs import MAX_SENTENCE_CHARS

if TYPE_CHECKING:
    from pipeline.context import JobContext

MAX_TEXT_CHARS = 100_000


def _something_to_say(value: str) -> str:
    if not value.strip():
        raise ValueError("is only whitespace: there is nothing to speak")
    return value


# The text of every kind that speaks.
SpokenText = Annotated[str, AfterValidator(_something_to_say)]
NORMALIZED_TEXT_CHARS = 2000
CLONING_MESSAGE = (
    'voice cloning needs a coqui voice ([voices.NAME] engine = "coqui" with a cloning model); '
    "this host has none, so inputs.reference_audio cannot be used"
)


class TtsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SpokenText = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="what to say")
    voice: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description='an espeak-ng voice: "en", "en-us", "de+f3", or "+f3" (a variant of language); '
        'or a coqui model folder: "coqui:/path/to/folder" or "coqui:/path/to/folder#speaker"',
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$",
        description="language of the text (en, de, fr, en-us …); default: the voice's, else en",
    )
    speed: float = Field(default=1.0, ge=0.25, le=4.0, description="1 is normal; espeak-ng: 175 words/min × speed, within 80–450")
    normalize: bool = Field(default=True, description="turn numbers, dates, units, math into words first")
    format: Literal["wav", "mp3", "m4a"] = "wav"


def check(params: TtsParams, inputs: Mapping[str, list[Path]]) -> None:
    """At accept time: the voice exists, the text says something, no cloning without coqui."""
    from pipeline.errors import ErrorCode, JobError

    cloning = bool(inputs.get("reference_audio"))
    from pipeline.speech.sentences import split_sentences

    if not split_sentences(params.text, params.language or "en", MAX_SENTENCE_CHARS):
        raise ValueError("params.text: has nothing to speak (no letters or digits)")
    from pipeline.speech.engine import resolve_voice

    try:
        choice = resolve_voice(params.voice, params.language)
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


def run(ctx: JobContext, params: TtsParams) -> None:
    from pipeline.speech import audio_out, subtitles
    from pipeline.speech.for_jobs import job_speech

    spoken = job_speech(ctx, params.text, params.voice, params.language, params.speed, params.normalize,
                        ctx.input("reference_audio"), progress_span=(0, 89))
    speech, choice, text, synthesis_seconds = spoken.speech, spoken.choice, spoken.text, spoken.synthesis_seconds

    name = f"speech.{params.format}"
    ctx.progress(90, stage="encoding", message=f"writing {name}")
    started = time.monotonic()
    audio_out.write_audio(speech.samples, speech.sample_rate, ctx.output_path(name), params.format)
    subtitles.write_srt(speech.segments, ctx.output_path("speech.srt"))
    info = audio_out.audio_info(ctx.output_path(name))
    if info and info.get("codec") == "mp3float":  # the decoder's name; the stream is mp3
        info["codec"] = "mp3"
    encode_seconds = time.monotonic() - started

    ctx.meta["audio"] = info
    ctx.meta["speech"] = {
        "engine": choice.engine,
        "voice": choice.voice,
        **({"model": choice.model} if choice.model else {}),
        "language": choice.language,
        "speed": params.speed,
        "sentences": len(speech.segments),
        "normalized": params.normalize,
        "normalized_text": text[:NORMALIZED_TEXT_CHARS],
        "realtime_factor": round(speech.duration / synthesis_seconds, 1) if synthesis_seconds > 0 else None,
    }
    ctx.meta["seconds"] = {"synthesis": round(synthesis_seconds, 3), "encode": round(encode_seconds, 3)}
    # The speech file first: /download falls back to the first result when the main one is absent.
    ctx.publish(name)
    ctx.publish("speech.srt")


KIND = KindSpec(
    name="tts",
    params=TtsParams,
    inputs=(InputSpec("reference_audio", media=("audio",)),),
    run=run,
    check=check,
    main_result="speech.wav",
    description="Text to speech (espeak-ng or coqui model folders; voice cloning with coqui), with sentence timings in speech.srt.",
)
