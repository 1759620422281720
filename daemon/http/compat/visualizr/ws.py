"""Visualizr's `ws /api/v1/ws/generation` (seed 003): subscribe to a request, get its
progress and how it ended.

The client sends `{"type": "subscribe", "request_id"}`; the socket answers at once with the
request's state, then a `progress` message whenever its status changes (progress never goes
back on one socket, also across a retried attempt) and one `completed`, `failed` or
`cancelled` message when it ends. Changes come from the daemon's status listener
(view.on_status), so they arrive as the worker reports them; a slow re-read every few
seconds also follows jobs that another daemon on the spool runs. Open sockets are capped
at [api] max_event_streams; a client that lets QUEUE_LIMIT messages pile up unread (it
sends and never reads) is dropped, so no client can make the daemon hold its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiohttp import WSMsgType, web

from daemon.http.compat.visualizr.status import ws_message
from contract.jsonread import JsonProblem, read_json
from daemon.view.for_fronts import is_valid_job_id

log = structlog.get_logger()

RECHECK_SECONDS = 3.0
# Messages waiting for one client; a client that reads keeps this near zero.
QUEUE_LIMIT = 256
# subscribe and unsubscribe are a few dozen bytes.
MESSAGE_BYTES = 64 * 1024


class Subscriptions:
    """The sockets' interest in jobs, fed by the daemon's status listener."""

    def __init__(self, view):
        self.sockets: dict[str, set[Socket]] = {}
        self.open = 0
        view.on_status(self.changed)

    def changed(self, doc: dict) -> None:
        for socket in list(self.sockets.get(doc.get("id"), ())):
            socket.post(doc)

    def add(self, job_id: str, socket: Socket) -> None:
        self.sockets.setdefault(job_id, set()).add(socket)

    def drop(self, job_id: str, socket: Socket) -> None:
        found = self.sockets.get(job_id)
        if found is not None:
            found.discard(socket)
            if not found:
                del self.sockets[job_id]


class Socket:
    """One client: its subscriptions, and what it was last told of each."""

    def __init__(self, ws: web.WebSocketResponse, subs: Subscriptions, status: Callable[[str], dict | None],
                 estimate: Callable[[dict], dict], transport: asyncio.Transport):
        self.ws, self.subs, self.status, self.estimate = ws, subs, status, estimate
        self.transport = transport
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self.progress: dict[str, int] = {}  # request id → the progress last sent
        self.last: dict[str, dict] = {}  # request id → the message last sent

    def post(self, doc: dict) -> None:
        """Queues a status document or an error for the sender; drops the client when
        QUEUE_LIMIT wait (it does not read what it asked for)."""
        try:
            self.queue.put_nowait(doc)
        except asyncio.QueueFull:
            if not self.transport.is_closing():
                log.warning("visualizr.ws_dropped", reason=f"{QUEUE_LIMIT} messages unread")
                self.transport.abort()  # no closing handshake: the client reads nothing

    def send_error(self, code: str, message: str, request_id: str | None = None) -> None:
        self.post({"type": "error", "request_id": request_id,
                   "error": {"code": code, "message": message, "details": None}})

    def subscribe(self, request_id) -> None:
        if not isinstance(request_id, str) or not is_valid_job_id(request_id):
            return self.send_error("INVALID_PARAMETERS", "subscribe needs a request_id (a generation request's id)",
                                   request_id if isinstance(request_id, str) else None)
        doc = self.status(request_id)
        if doc is None:
            return self.send_error("REQUEST_NOT_FOUND", f"no generation request {request_id!r}", request_id)
        self.subs.add(request_id, self)
        self.progress.setdefault(request_id, 0)
        self.post(doc)

    def unsubscribe(self, request_id: str) -> None:
        self.subs.drop(request_id, self)
        self.progress.pop(request_id, None)

    async def tell(self, doc: dict) -> None:
        """The message for a status document, sent unless it says nothing new (an error
        message as it is)."""
        if doc.get("type") == "error":
            return await self.ws.send_json(doc)
        request_id = doc["id"]
        if request_id not in self.progress:
            return  # unsubscribed (or already ended) since
        message = ws_message(doc, self.estimate(doc))
        if message["type"] == "progress":
            message["progress"] = max(message["progress"], self.progress[request_id])
            if message == self.last.get(request_id):
                return
        await self.ws.send_json(message)
        self.last[request_id] = message
        if message["type"] == "progress":
            self.progress[request_id] = message["progress"]
        else:
            self.unsubscribe(request_id)  # it has ended: nothing more will come

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = read_json(msg.data)
            except JsonProblem as exc:
                self.send_error("INVALID_PARAMETERS", f"the message {exc}; messages are JSON objects, "
                                "e.g. {\"type\": \"subscribe\", \"request_id\": \"…\"}")
                continue
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "subscribe":
                self.subscribe(data.get("request_id"))
            elif kind == "unsubscribe" and isinstance(data.get("request_id"), str):
                self.unsubscribe(data["request_id"])
            else:
                self.send_error("INVALID_PARAMETERS", f"unknown message type {kind!r} (send subscribe or unsubscribe)")

    async def write(self) -> None:
        """The one sender: status documents and errors as they are queued."""
        while True:
            try:
                doc = await asyncio.wait_for(self.queue.get(), RECHECK_SECONDS)
            except asyncio.TimeoutError:
                for request_id in list(self.progress):  # another host's jobs change without events here
                    if (doc := self.status(request_id)) is not None:
                        await self.tell(doc)
                continue
            await self.tell(doc)

    def close(self) -> None:
        for request_id in list(self.progress):
            self.unsubscribe(request_id)


async def serve(request: web.Request, subs: Subscriptions, limit: int, status, estimate, error) -> web.StreamResponse:
    if subs.open >= limit:
        return error(503, "SERVICE_UNAVAILABLE", f"{subs.open} WebSockets are open ([api] max_event_streams); try again later",
                     headers={"Retry-After": "10"})
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MESSAGE_BYTES)
    await ws.prepare(request)
    subs.open += 1
    socket = Socket(ws, subs, status, estimate, request.transport)
    writer = asyncio.ensure_future(socket.write())
    try:
        await socket.read()
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer  # it ends with the connection (a send to a closed socket raises)
        socket.close()
        subs.open -= 1
    return ws
