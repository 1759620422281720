"""The per-request chain of every HTTP front (the native API and each seed personality),
written once, as one aiohttp middleware (design: docs/api.md).

In order: the request is timed (for /metrics, where the front has them); the guard's checks
(Host, Origin, body types: daemon/http/guard.py); the token and its scope, unless the path
is open; the handler. A broken spool met on the way is answered 503/507, aiohttp's own HTTP
errors and a BadRequest in the front's error shape, never as a 500.

One coroutine per request rather than a middleware per check: each aiohttp middleware layer
costs a coroutine and a partial per request (issue 27 item 9).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from daemon.http.auth import Token, token_refusal
from daemon.http.guard import HttpPolicy, guard_refusal, spool_answer

# aiohttp's own refusals (no route, wrong method, body too large), by the code they answer.
AIOHTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class BadRequest(Exception):
    """A request the front's document says is wrong: answered with `status` in its shape."""

    def __init__(self, message: str, status: int = 400, code: str = "bad_request", headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers


@dataclass(frozen=True)
class FrontChain:
    """What one front's chain checks and how it answers: `error(status, code, message,
    headers=None)` in its error shape, `token_refused(401 or 403, scope)` for a missing or
    short token, `is_open(path)` for the paths anyone may fetch, `observe(method, route,
    status, seconds)` for its metrics (None: none)."""

    policy: HttpPolicy
    error: Callable[..., web.Response]
    tokens: list[Token]
    is_open: Callable[[str], bool]
    token_refused: Callable[[int, str | None], web.Response]
    observe: Callable[[str, str, int, float], None] | None = None

    def middleware(self):
        @web.middleware
        async def chain(request: web.Request, handler):
            started = time.perf_counter()
            status = 500
            try:
                response = await self._answer(request, handler)
                status = response.status
                return response
            except web.HTTPException as exc:  # below 400 (a redirect): aiohttp's to send
                status = exc.status
                raise
            finally:
                if self.observe is not None:
                    resource = request.match_info.route.resource
                    self.observe(request.method, resource.canonical if resource else "unmatched", status,
                                 time.perf_counter() - started)

        return chain

    async def _answer(self, request: web.Request, handler) -> web.StreamResponse:
        refused = guard_refusal(self.policy, request, self.error)
        if refused is not None:
            return refused
        if self.tokens and not self.is_open(request.path):
            found = token_refusal(self.tokens, request)
            if found is not None:
                return self.token_refused(*found)
        try:
            return await handler(request)
        except BadRequest as exc:
            return self.error(exc.status, exc.code, str(exc), headers=exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self.error(exc.status, AIOHTTP_CODES.get(exc.status, "bad_request"), exc.reason)
        except OSError as exc:
            fault = spool_answer(exc)
            if fault is None:
                raise
            return self.error(*fault)
