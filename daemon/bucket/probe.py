"""The bucket's safety probe, for start-up and `vidspool doctor`: does the server honour the
conditional requests the bucket spool's claims and leases stand on?

It works under one fresh key, `.vidspool-probe/<host>-<random>`, and removes what it wrote.
A failed check names what the server did and what it costs; a server that fails any
check but a warning's is refused. Each request kind's round trip is measured too (the
bench's calibration).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from daemon.bucket.errors import BucketError, PreconditionFailed
from daemon.bucket.store import BucketStore

PROBE_FOLDER = ".vidspool-probe"
WRONG_ETAG = '"' + "0" * 32 + '"'


@dataclass(frozen=True)
class ProbeCheck:
    name: str
    ok: bool
    message: str
    # A failed warning costs something named in the message; the bucket is still usable.
    warning: bool = False


@dataclass
class ProbeReport:
    checks: list[ProbeCheck] = field(default_factory=list)
    # Request kind -> round-trip times in milliseconds.
    latency_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def safe(self) -> bool:
        return all(c.ok or c.warning for c in self.checks)

    def refusal(self) -> str | None:
        """Why the bucket is refused (the first failed check), None when it is safe."""
        return next((f"{c.name}: {c.message}" for c in self.checks if not c.ok and not c.warning), None)


class _Probe:
    def __init__(self, store: BucketStore, host: str):
        self.store = store
        self.report = ProbeReport()
        self.folder = f"{PROBE_FOLDER}/{host}-{secrets.token_hex(4)}"
        self.key = f"{self.folder}/claim"

    def timed(self, kind: str, request, *args):
        started = time.perf_counter()
        try:
            return request(*args)
        finally:
            self.report.latency_ms.setdefault(kind, []).append((time.perf_counter() - started) * 1000)

    def etag_now(self) -> str | None:
        entry = self.store.head(self.key)
        return entry.etag if entry else None

    def check(self, name: str, ok: bool, message: str, warning: bool = False) -> bool:
        self.report.checks.append(ProbeCheck(name, ok, message, warning))
        return ok

    def run(self) -> None:
        s, key = self.store, self.key
        body1, body2, body3 = b"vidspool probe 1", b"vidspool probe 2", b"vidspool probe 3"
        try:
            etag1 = self.timed("create", s.create, key, body1)
        except BucketError as exc:
            self.check("write", False, f"cannot write under {s.location}: {exc}")
            return
        if not self.check("write", etag1 is not None, f"an exclusive create of the new key {key} "
                          + ("was applied" if etag1 is not None else "answered that it exists")):
            return
        got = self.timed("get", s.get, key)
        self.check("read back", got == (body1, etag1), "the object reads back what was written, with its ETag"
                   if got == (body1, etag1) else f"wrote {body1!r} (ETag {etag1}), read back {got!r}")
        second = self.timed("create", s.create, key, body2)
        self.check("exclusive create", second is None, "a second PUT with If-None-Match: * was refused" if second is None
                   else "the server accepted a second PUT with If-None-Match: * — it does not honour exclusive "
                        "creates; vidspool cannot coordinate hosts on it")
        current = self.etag_now() if second is not None else etag1
        if current is None:
            self.check("read back", False, f"{key} vanished after it was written")
            return
        etag2 = self.timed("replace", s.replace, key, body2, current)
        if not self.check("compare-and-swap applies", etag2 is not None,
                          "a PUT with If-Match: <the current ETag> was applied" if etag2 is not None
                          else "a PUT with If-Match: <the current ETag> was refused: no lease could ever be renewed"):
            return
        self.check("distinct ETags", etag2 != etag1, "two bodies of one key have different ETags" if etag2 != etag1
                   else f"two different bodies got the same ETag {etag1}: a compare-and-swap cannot tell them apart")
        stale = self.timed("replace", s.replace, key, body3, etag1)
        wrong = stale or self.timed("replace", s.replace, key, body3, WRONG_ETAG)
        self.check("compare-and-swap", not stale and not wrong,
                   "PUTs with If-Match: <a stale ETag> and <a wrong one> were refused" if not stale and not wrong
                   else "the server accepted a PUT with If-Match: <a stale ETag> — it does not honour "
                        "compare-and-swap; vidspool cannot fence a host that lost its job on it")
        etag = self.etag_now()
        listed = [e.key for e in self.timed("list", lambda: list(s.list(self.folder)))]
        self.check("listing", key in listed, "a new key is listed at once" if key in listed
                   else f"a key written a moment ago is not listed ({listed}): new jobs would be seen late")
        self.check_copy(etag)
        deleted = self.timed("delete_if", s.delete_if, key, etag1)
        still = s.head(key) is not None
        self.check("conditional delete", not deleted and still,
                   "a DELETE with If-Match: <a stale ETag> was refused" if not deleted and still
                   else "the server ignores If-Match on DELETE: a drop uploaded again under the same name while "
                        "the first was being accepted can be deleted unaccepted (a short window, once per drop)",
                   warning=True)

    def check_copy(self, etag: str) -> None:
        s, dst = self.store, f"{self.folder}/copy"
        try:
            self.timed("copy", s.copy, self.key, dst, WRONG_ETAG)
            honoured = False
        except PreconditionFailed:
            honoured = True
        self.check("conditional copy", honoured, "a copy with x-amz-copy-source-if-match: <a stale ETag> was refused"
                   if honoured else "the server ignores x-amz-copy-source-if-match: an input replaced while its "
                                    "job was being accepted could be taken in its new version", warning=True)
        self.timed("copy", s.copy, self.key, dst, etag)

    def clean(self) -> None:
        try:
            keys = [e.key for e in self.store.list(self.folder)]
            self.timed("delete", self.store.delete, keys)
        except BucketError as exc:
            self.check("clean up", False, f"could not remove {self.folder}/: {exc}", warning=True)


def probe_bucket(store: BucketStore, host: str) -> ProbeReport:
    """Runs every check under a fresh probe key and removes it again. Requests that fail for
    want of an answer (Unavailable) or of rights (Refused) fail the first check, named."""
    probe = _Probe(store, host)
    try:
        probe.run()
    except BucketError as exc:
        probe.check("requests", False, f"the server stopped answering during the probe: {exc}")
    finally:
        probe.clean()
    return probe.report
