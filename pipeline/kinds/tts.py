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
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.kinds import KindSpec
from contract.voices import VoiceBook
from pipeline.speech.params import REFERENCE_AUDIO, Language, Normalize, SpokenText, Speed, Voice

if TYPE_CHECKING:
    from pipeline.context import JobContext

NORMALIZED_TEXT_CHARS = 2000


class TtsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SpokenText = Field(description="what to say")
    voice: Voice = None
    language: Language = None
    speed: Speed = 1.0
    normalize: Normalize = True
    format: Literal["wav", "mp3", "m4a"] = "wav"


def check(params: TtsParams, inputs: Mapping[str, list[Path]], voices: VoiceBook = VoiceBook()) -> None:
    """At accept time: the voice exists among `voices` (the daemon passes the host's; the
    default has none configured and no model folders), the text says something, no cloning
    without coqui."""
    from pipeline.speech.for_jobs import check_speech

    check_speech(params.text, params.voice, params.language, voices, cloning=bool(inputs.get("reference_audio")))


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
    inputs=(REFERENCE_AUDIO,),
    run=run,
    check=check,
    check_takes_voices=True,
    main_result="speech.wav",
    description="Text to speech (espeak-ng or coqui model folders; voice cloning with coqui), with sentence timings in speech.srt.",
)
