"""One webhook attempt (SPEC §10.1): a signed POST that follows no redirect.

Signed with the Standard Webhooks library (`webhook-id`, `webhook-timestamp`,
`webhook-signature`; each attempt signs with its own timestamp). Anything but 2xx is a
failed attempt. A job file's URL is checked again here (daemon/webhook_urls.py): its host's
addresses before connecting, and the connected peer itself, so that a name resolving to a
private address after the check (DNS rebinding) is refused too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from daemon.config import WebhooksConfig
from daemon.webhook_urls import address_problem, allowed_explicitly, matching_prefixes, resolved_problem


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


# -- a session that connects to public addresses only -----------------------------------
class _PublicPeer:
    def _new_conn(self):
        sock = super()._new_conn()
        problem = address_problem(sock.getpeername()[0])
        if problem:
            sock.close()
            raise Refused(f"{self.host}: the connection went to {problem}")
        return sock


class _PublicHTTPConnection(_PublicPeer, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicPeer, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}


def new_session(public_only: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy or .netrc from the environment: the URL is what is reached
    if public_only:
        for scheme in ("http://", "https://"):
            session.mount(scheme, _PublicOnlyAdapter())
    return session


class Poster:
    """Signs and POSTs one attempt; keeps a keep-alive session per sender thread."""

    def __init__(self):
        self._local = threading.local()

    def _session(self, public_only: bool) -> requests.Session:
        name = "public" if public_only else "any"
        session = getattr(self._local, name, None)
        if session is None:
            session = new_session(public_only)
            setattr(self._local, name, session)
        return session

    def attempt(self, url: str, source: str, msg_id: str, body: str, config: WebhooksConfig) -> Attempt:
        started = time.monotonic()
        public_only = source == "job" and not allowed_explicitly(url, config.allowed_urls)
        if source == "job" and not matching_prefixes(url, config.allowed_urls):
            return Attempt(None, 0.0, f"{url} is no longer under [webhooks] allowed_urls", refused=True)
        if public_only and (problem := resolved_problem(url)):
            return Attempt(None, time.monotonic() - started, problem, refused=True)
        if not config.secret:
            return Attempt(None, 0.0, "[webhooks] secret is not set: deliveries cannot be signed")  # retried: SIGHUP may set it
        try:
            headers = signed_headers(config.secret, msg_id, body)
            with self._session(public_only).post(url, data=body.encode(), headers=headers, stream=True,
                                                 timeout=config.timeout_seconds, allow_redirects=False) as r:
                status, location = r.status_code, r.headers.get("location")
                if (r.headers.get("content-length") or "x").isdigit() and int(r.headers["content-length"]) <= 65536:
                    _ = r.content  # a short answer read whole keeps the connection for the next delivery
        except Refused as exc:
            return Attempt(None, time.monotonic() - started, str(exc), refused=True)
        except (requests.RequestException, ValueError, OSError) as exc:  # ValueError: a URL urllib3 cannot take
            return Attempt(None, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:500])
        seconds = time.monotonic() - started
        if 200 <= status < 300:
            return Attempt(status, seconds)
        moved = f" (a redirect to {location}, not followed)" if 300 <= status < 400 else ""
        return Attempt(status, seconds, f"HTTP {status}{moved}"[:500])


def signed_headers(secret: str, msg_id: str, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed now."""
    now = int(time.time())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": signature,
            "content-type": "application/json", "user-agent": "vidspool-webhooks"}
