"""Reading JSON that anyone may have written (job files, request bodies, WebSocket
messages): `json.loads` with every way it can fail turned into one error that says what is
wrong and where, so no reader answers a hostile document with a crash, and no NaN or
infinite number (which JSON does not have, and Python reads) reaches a job.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any


class JsonProblem(ValueError):
    """What is wrong with a JSON text, worded to follow the name of the thing read
    ("job.json" + " is nested too deeply")."""


class Refused:
    """Stands in the parsed document for a value this daemon does not take, so that the
    error can name where it is."""

    def __init__(self, what: str, why: str):
        self.what, self.why = what, why


def read_json(raw: bytes | str) -> Any:
    """The document in `raw`; JsonProblem if it is not UTF-8, not JSON, nested deeper than
    Python recurses, or holds NaN, Infinity, a number out of float range or an integer over
    Python's digit limit (naming where)."""
    reader = Reader()
    try:
        doc = reader.parse(raw)
    except UnicodeDecodeError:
        raise JsonProblem("is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise JsonProblem(f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise JsonProblem("is nested too deeply") from None
    except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        # Read again marking such integers: a second read for these documents only (every
        # integer through a Python hook would slow the ordinary ones).
        reader = Reader(mark_long_integers=True)
        doc = reader.parse(raw)
        if not reader.refused:
            raise JsonProblem(f"is not valid JSON: {exc}") from None
    if reader.refused:  # walked only then: the walk costs as much as the parse
        # None: the value was replaced by a later one under the same key.
        path = next((path or "(top level)" for path, value in walk(doc) if isinstance(value, Refused)), None)
        first = reader.refused[0]
        raise JsonProblem(f"has {first.what}{f' at {path}' if path else ''} ({first.why})")
    return doc


class Reader:
    """One json.loads with Refused in place of NaN, ±Infinity, numbers past float range and
    (when asked) integers past Python's digit limit; `refused` lists them."""

    def __init__(self, mark_long_integers: bool = False):
        self.refused: list[Refused] = []
        self.mark_long_integers = mark_long_integers

    def parse(self, raw: bytes | str) -> Any:
        hooks = {"parse_int": self.integer} if self.mark_long_integers else {}
        return json.loads(raw, parse_float=self.number, parse_constant=self.constant, **hooks)

    def refuse(self, what: str, why: str) -> Refused:
        self.refused.append(Refused(what, why))
        return self.refused[-1]

    def number(self, text: str) -> float | Refused:
        value = float(text)
        return value if math.isfinite(value) else self.refuse(f"{text[:24]}", "out of the range of a number")

    def constant(self, text: str) -> Refused:
        return self.refuse(text, "not a JSON number")

    def integer(self, text: str) -> int | Refused:
        try:
            return int(text)
        except ValueError:
            digits = len(text.lstrip("-"))
            return self.refuse(f"an integer of {digits} digits", f"at most {sys.get_int_max_str_digits()}")


def walk(doc: Any) -> Iterator[tuple[str, Any]]:
    """(key path, value) of every value in a parsed document, in document order, the path
    as the job file's errors name keys ("params.slides.2"); a loop, not recursion
    (documents may be nested as deep as Python's parser goes)."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, value = stack.pop()
        yield path, value
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            continue
        stack.extend((f"{path}.{key}" if path else str(key), item) for key, item in reversed(items))
