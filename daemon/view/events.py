"""The event log behind GET /api/v1/events: the last status changes, each with an id.

Ids are `<run>-<n>`: `run` changes with every daemon start, so a client reconnecting with a
Last-Event-ID from an earlier run (or one older than the ring) is told to `reset`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque


class EventLog:
    def __init__(self, keep: int = 10_000):
        self.run = secrets.token_hex(3)
        self.events: deque[tuple[int, str, dict]] = deque(maxlen=keep)  # (n, job_id, doc)
        self.last = 0
        self._waiters: set[asyncio.Event] = set()

    def add(self, doc: dict) -> None:
        self.last += 1
        self.events.append((self.last, doc.get("id"), doc))
        for waiter in list(self._waiters):
            waiter.set()

    def event_id(self, n: int) -> str:
        return f"{self.run}-{n}"

    def since(self, last_event_id: str | None) -> int | None:
        """The sequence number to replay after, or None when that id cannot be served."""
        if not last_event_id:
            return self.last
        run, _, n = last_event_id.rpartition("-")
        if run != self.run or not n.isdigit() or int(n) > self.last:
            return None
        oldest = self.events[0][0] if self.events else self.last + 1
        return int(n) if int(n) >= oldest - 1 else None

    def after(self, n: int, job: str | None = None) -> list[tuple[int, dict]]:
        if not self.events or n >= self.last:
            return []
        start = max(0, len(self.events) - (self.last - n))
        return [(m, doc) for m, job_id, doc in list(self.events)[start:] if job is None or job_id == job]

    async def wait(self, timeout: float) -> None:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)
