"""Splitting text into sentences for synthesis, one engine call per sentence.

A sentence ends at `.`, `!`, `?`, `…` (and `。！？` in CJK text) followed by a space or the end
of the text, and at every line break. These do not end a sentence:

- a period inside a token: decimals (`3.5`), versions, `e.g.x`, URLs;
- a known abbreviation: titles (`Dr. Smith`, `Mrs.`, `Prof.`), `e.g.`, `i.e.`, `vs.`, `z.B.`,
  `d.h.`, and number words before a number (`No. 5`, `Fig. 3`, `Nr. 7`);
- an initial or acronym (`J. R. R. Tolkien`, `U.S. Army`);
- a terminator followed by a lowercase word (`"Really?" she asked`, `well... maybe`);
- in German, a number followed by a period (ordinals: `am 3. Juli`).

A sentence longer than `max_chars` is cut at `, ; :` (greedily, as few pieces as fit), then
at spaces, then anywhere, so that every piece fits an engine's input limit.
"""

from __future__ import annotations

import re

# Abbreviations that never end a sentence (lowercase, without the final period).
ABBREVIATIONS = frozenset({
    # titles and honorifics
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "capt", "lt",
    "col", "sgt", "hon", "messrs", "mme", "mlle", "mm", "hr", "fr", "frl", "sra", "srta", "dra",
    # Latin and common shorthands
    "e.g", "i.e", "cf", "vs", "approx", "ca", "viz", "resp", "incl", "dept", "est",
    # German
    "z.b", "d.h", "u.a", "bzw", "ggf", "evtl", "inkl", "zzgl", "sog", "vgl", "bspw", "u.u", "o.ä",
    # French, Spanish, Italian
    "p.ex", "env", "cf", "sig", "pág", "sig", "ecc",
})
# Abbreviations that do not end a sentence when a number follows ("No. 5", "Fig. 3").
NUMBER_ABBREVIATIONS = frozenset({
    "no", "nr", "nos", "fig", "figs", "vol", "vols", "ch", "chap", "p", "pp", "art", "sec", "sect",
    "eq", "eqs", "tab", "op", "bd", "abs", "n", "núm", "num",
})

_TERMINATOR = re.compile(r"([.!?…‼⁇⁈⁉]+|[。！？]+)([\"'”’»)\]」』]*)")
_CJK_TERMINATORS = "。！？"
_OPENERS = "\"'“‘«([¿¡„‚"
_INITIAL_OR_ACRONYM = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+|(?<=[，；：、])")


def split_sentences(text: str, language: str = "en", max_chars: int = 400) -> list[str]:
    """The sentences of `text`, stripped, in order, each at most max_chars long.

    Pieces with nothing to say (no letter or digit, e.g. a line of `***`) are dropped.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    base = language.split("-")[0].split("_")[0].lower() if language else "en"
    sentences: list[str] = []
    for line in text.splitlines():
        for sentence in _sentences_in_line(line.strip(), base):
            if any(ch.isalnum() for ch in sentence):
                sentences.extend(split_long(sentence, max_chars))
    return sentences


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs: text between blank lines (lines of only whitespace count as blank)."""
    paragraphs = re.split(r"\n[ \t\r\f\v]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return [p for p in paragraphs if p.strip()]


def _sentences_in_line(line: str, language: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in _TERMINATOR.finditer(line):
        end = match.end()
        rest = line[end:]
        if not rest.strip():
            break  # the line's end ends the sentence anyway
        terminator = match.group(1)
        if terminator[0] not in _CJK_TERMINATORS:
            if not rest[0].isspace():
                continue  # "3.5", "e.g.", "www.example.org"
            if _continues(line[start : match.start()], terminator, rest.lstrip(), language):
                continue
        piece = line[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    tail = line[start:].strip()
    if tail:
        out.append(tail)
    return out


def _continues(before: str, terminator: str, after: str, language: str) -> bool:
    """True when the terminator at the end of `before` does not end the sentence."""
    following = after.lstrip(_OPENERS)
    if following[:1].islower():
        return True
    if terminator != ".":
        return False
    words = before.split()
    if not words:
        return False
    token = words[-1].lstrip(_OPENERS)
    lowered = token.lower()
    if lowered in ABBREVIATIONS:
        return True
    if lowered in NUMBER_ABBREVIATIONS and following[:1].isdigit():
        return True
    if _INITIAL_OR_ACRONYM.fullmatch(token) and (len(token) == 1 or "." in token):
        # "J." or "U.S" (the last period is the terminator); a single lowercase letter
        # before a capital ("plan b. Then") is rare enough to accept.
        return token[0].isupper() or "." in token
    if language == "de" and token.isdigit():
        return True  # German ordinals: "am 3. Juli"
    return False


def split_long(sentence: str, max_chars: int) -> list[str]:
    """`sentence` in pieces of at most max_chars: at clause punctuation, then spaces, then anywhere."""
    if len(sentence) <= max_chars:
        return [sentence]
    clauses = [c for c in _CLAUSE_BREAK.split(sentence) if c.strip()]
    pieces: list[str] = []
    for clause in _merge(clauses, max_chars, " "):
        if len(clause) <= max_chars:
            pieces.append(clause)
            continue
        words: list[str] = []
        for word in clause.split():
            if len(word) > max_chars:
                words.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
            else:
                words.append(word)
        pieces.extend(_merge(words, max_chars, " "))
    return [p.strip() for p in pieces if p.strip()]


def _merge(parts: list[str], max_chars: int, joiner: str) -> list[str]:
    """Greedily joins consecutive parts while the result stays within max_chars."""
    merged: list[str] = []
    current = ""
    for part in parts:
        part = part.strip()
        glue = joiner if current and not _is_cjk(current[-1]) else ""
        candidate = f"{current}{glue}{part}" if current else part
        if current and len(candidate) > max_chars:
            merged.append(current)
            current = part
        else:
            current = candidate
    if current:
        merged.append(current)
    return merged


def _is_cjk(char: str) -> bool:
    return "\u3000" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef"
