"""API tokens and scopes: `[api] tokens` and `[api] tokens_file`, checked in constant time.

A token is a plain string (every scope) or `{token = "…", scopes = ["read"]}`; a tokens
file holds one token per line with optional comma-separated scopes after it. `read` covers
GETs, events, files and metrics; `submit` covers submitting, canceling and model loading.
Tokens are never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("read", "submit")


@dataclass(frozen=True)
class Token:
    secret: bytes
    scopes: frozenset[str]


def load_tokens(entries: list, tokens_file: Path | None) -> list[Token]:
    tokens = []
    for entry in entries:
        if isinstance(entry, str):
            tokens.append(Token(entry.encode(), frozenset(SCOPES)))
        else:
            tokens.append(Token(entry.token.encode(), frozenset(entry.scopes)))
    if tokens_file is not None:
        for number, line in enumerate(Path(tokens_file).read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            secret, _, scopes = line.partition(" ")
            names = frozenset(s.strip() for s in scopes.split(",") if s.strip()) or frozenset(SCOPES)
            unknown = names - set(SCOPES)
            if unknown:
                raise ValueError(f"{tokens_file} line {number}: unknown scope {sorted(unknown)[0]!r} (known: read, submit)")
            tokens.append(Token(secret.encode(), names))
    return tokens


def find_token(tokens: list[Token], presented: str | None) -> Token | None:
    """The configured token equal to `presented`, comparing with every one in constant time."""
    if not presented:
        return None
    try:
        given = presented.encode()
    except UnicodeEncodeError:  # a header's bytes that are not UTF-8: no configured token is
        return None
    found = None
    for token in tokens:
        if hmac.compare_digest(token.secret, given):
            found = token
    return found


def token_refusal(tokens: list[Token], request) -> tuple[int, str | None] | None:
    """Why a request may not pass: (401, None) without a configured token, (403, SCOPE)
    when its token lacks the scope the request needs (`read` for GET and HEAD, else
    `submit`); None when it may. ?access_token= counts only for reads: EventSource, <video
    src> and browser WebSockets cannot send headers, and a token in a URL must never be
    able to change anything."""
    query = request.query if request.method in ("GET", "HEAD") else {}
    token = find_token(tokens, presented_token(request.headers, query))
    if token is None:
        return 401, None
    scope = "read" if request.method in ("GET", "HEAD") else "submit"
    return (403, scope) if scope not in token.scopes else None


def may_submit(api, bearer: str | None) -> bool:
    """Whether `bearer` is a configured token of the submit scope ([api] tokens and
    tokens_file, read now); an unreadable tokens file, or bytes no token has: no."""
    if not bearer:
        return False
    try:
        token = find_token(load_tokens(api.tokens, api.tokens_file), bearer)
    except (OSError, ValueError):
        token = None
    return token is not None and "submit" in token.scopes


def presented_token(headers, query) -> str | None:
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return query.get("access_token")
