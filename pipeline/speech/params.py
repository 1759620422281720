"""The speech params of every kind that speaks (tts, narrated-video, talking-head), declared
once: each kind writes `voice: Voice = None` and gets the same limits and description.

The limits are the README's for tts, whose speech params the others take: text 1–100,000
characters and not only whitespace, speed 0.25–4, language a code such as "en", "en-us",
"pt_BR"; voice at most 1000 characters (as tts and talking-head had; narrated-video had
200). Kind modules import this at module level, so it imports only pydantic and the contract.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from contract.kinds import InputSpec

MAX_TEXT_CHARS = 100_000
MAX_VOICE_CHARS = 1000  # a coqui voice is a folder path, "coqui:/path/to/folder#speaker"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$"


def _something_to_say(value: str) -> str:
    if not value.strip():
        raise ValueError("is only whitespace: there is nothing to speak")
    return value


# Each kind gives `text` its own description (what the text becomes in that kind).
SpokenText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_something_to_say)]
Voice = Annotated[str | None, Field(
    min_length=1,
    max_length=MAX_VOICE_CHARS,
    description='a [voices.NAME] from config; an espeak-ng voice: "en", "en-us", "de+f3", or "+f3" (a variant of '
    'language); or a coqui model folder: "coqui:/path/to/folder" or "coqui:/path/to/folder#speaker"',
)]
Language = Annotated[str | None, Field(
    pattern=LANGUAGE_PATTERN,
    description="language of the text (en, de, fr, en-us …); default: the voice's, else en",
)]
Speed = Annotated[float, Field(ge=0.25, le=4.0, description="1 is normal; espeak-ng: 175 words/min × speed, within 80–450")]
Normalize = Annotated[bool, Field(description="turn numbers, dates, units, math into words first")]

# The recording whose voice a cloning-capable coqui model speaks in.
REFERENCE_AUDIO = InputSpec("reference_audio", media=("audio",))
