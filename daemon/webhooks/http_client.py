"""One webhook attempt (SPEC §10.1): a signed POST that follows no redirect, within a
wall-clock deadline.

Signed with the Standard Webhooks library (`webhook-id`, `webhook-timestamp`,
`webhook-signature`; each attempt signs with its own timestamp). Anything but 2xx is a
failed attempt. An attempt ends at `[webhooks] timeout_seconds` however it is going (a
receiver that trickles its answer a byte at a time is cut there). A job file's URL is
checked again here (daemon/webhooks/urls.py): its host is resolved once, every address it
resolved to must be public, and the connection goes to those very addresses, so a name
that resolves to a private address a moment later (DNS rebinding) reaches nothing, and no
connection is ever opened to an address that is refused.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from standardwebhooks import Webhook

from daemon.config import WebhooksConfig
from daemon.webhooks.urls import address_problem, allowed_explicitly, host_port, host_problem, matching_prefixes

SHORT_ANSWER = 65536  # an answer up to this is read whole (the connection is kept for the next)


@dataclass(frozen=True)
class Attempt:
    """What one POST did: `status` is the HTTP code (None: no answer)."""

    status: int | None
    seconds: float
    error: str | None = None
    refused: bool = False  # an address a job file may not reach: nothing was sent

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Refused(Exception):
    """A job file's URL leads to an address it may not reach."""


class PublicResolver(AbstractResolver):
    """Resolves a name once and hands the connection only public addresses: any address that
    is not (loopback, private …) refuses the whole name, before anything connects."""

    def __init__(self):
        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        for address in found:
            problem = address_problem(address["host"])
            if problem:
                raise Refused(f"{host}: {problem}")
        return found

    async def close(self) -> None:
        await self._resolver.close()


def new_session(public_only: bool) -> aiohttp.ClientSession:
    """A session that takes no proxy or .netrc from the environment (the URL is what is
    reached) and resolves each new connection afresh; `public_only`: through PublicResolver."""
    connector = aiohttp.TCPConnector(resolver=PublicResolver() if public_only else None, use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)


class Poster:
    """Signs and POSTs one attempt; keeps one keep-alive session per kind of URL. Runs on the
    sender's event loop; `close()` at the end."""

    def __init__(self):
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def _session(self, public_only: bool) -> aiohttp.ClientSession:
        if public_only not in self._sessions:
            self._sessions[public_only] = new_session(public_only)
        return self._sessions[public_only]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()

    async def attempt(self, url: str, source: str, msg_id: str, body: str, config: WebhooksConfig) -> Attempt:
        started = time.monotonic()
        public_only = source == "job" and not allowed_explicitly(url, config.allowed_urls)
        if source == "job" and not matching_prefixes(url, config.allowed_urls):
            return Attempt(None, 0.0, f"{url} is no longer under [webhooks] allowed_urls", refused=True)
        if source == "job" and (problem := host_problem(url)):
            return Attempt(None, 0.0, problem, refused=True)
        if public_only and (problem := literal_problem(url)):
            return Attempt(None, 0.0, problem, refused=True)
        if not config.secret:
            return Attempt(None, 0.0, "[webhooks] secret is not set: deliveries cannot be signed")  # retried: SIGHUP may set it
        # ceil_threshold: aiohttp rounds a timeout from 5 s on up to a whole second otherwise
        deadline = aiohttp.ClientTimeout(total=config.timeout_seconds, ceil_threshold=config.timeout_seconds + 1)
        try:
            headers = signed_headers(config.secret, msg_id, body)
            async with self._session(public_only).post(url, data=body.encode(), headers=headers, timeout=deadline,
                                                       allow_redirects=False) as r:
                status, location = r.status, r.headers.get("location")
                if r.content_length is not None and r.content_length <= SHORT_ANSWER:
                    await r.read()  # a short answer read whole keeps the connection for the next delivery
        except Refused as exc:
            return Attempt(None, time.monotonic() - started, str(exc), refused=True)
        except TimeoutError:  # the deadline (aiohttp raises its own subclasses of it)
            return Attempt(None, time.monotonic() - started, f"no answer within timeout_seconds ({config.timeout_seconds} s)")
        except (aiohttp.ClientError, ValueError, OSError) as exc:  # ValueError: a URL the client cannot take
            return Attempt(None, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:500])
        seconds = time.monotonic() - started
        if 200 <= status < 300:
            return Attempt(status, seconds)
        moved = f" (a redirect to {location}, not followed)" if 300 <= status < 400 else ""
        return Attempt(status, seconds, f"HTTP {status}{moved}"[:500])


def literal_problem(url: str) -> str | None:
    """Why a job file may not reach the URL's host when it is an IP address as written (the
    client connects to it without resolving anything); None for a name or a public address."""
    host, _ = host_port(url)
    try:
        problem = address_problem(host)
    except ValueError:
        return None  # a name: PublicResolver checks what it resolves to
    return problem and f"{host}: {problem}"


def signed_headers(secret: str, msg_id: str, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed now."""
    now = int(time.time())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": signature,
            "content-type": "application/json", "user-agent": "vidspool-webhooks"}
