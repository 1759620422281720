"""The S3 requests a bucket spool stands on, and nothing of vidspool's jobs.

Object reads and writes go through obstore (Rust: a fraction of boto3's CPU per request,
and conditional PUTs: `If-None-Match: *` and `If-Match`). botocore does what obstore
cannot say: a DELETE or a copy conditional on an ETag, and listings that hold a key obstore
cannot represent (`a//b`, `..`, control characters: its whole listing would fail, so anyone
who can write the inbox could blind the daemon). Its client (it loads S3's whole API
model) is made on first use, so a worker that only reads and writes objects never makes it.

Keys are spool keys (relative to the prefix), checked by `BucketLocation.key`. Every
request has explicit timeouts; obstore's own retries are off for everything but media
transfers, because a conditional write retried after its answer was lost would report a
412 for the caller's own success; the daemon retries on its next turn instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from botocore.exceptions import BotoCoreError, ClientError
from obstore.store import S3Store

from daemon.bucket.credentials import ChainCredentials, StaticCredentials, aws_session, region_of
from daemon.bucket.errors import (
    AlreadyExists,
    BucketError,
    NotFound,
    PreconditionFailed,
    TooLarge,
    from_botocore,
    from_obstore,
)
from daemon.bucket.location import BucketLocation

if TYPE_CHECKING:
    from daemon.config import S3Config

MIB = 1024 * 1024
# Idle pooled connections are dropped before servers drop theirs (SeaweedFS and AWS after
# 10-20 s): a request sent on a connection the server is closing fails with no retry.
POOL_IDLE = timedelta(seconds=4)
# Media transfers may retry (their PUTs are unconditional, their GETs idempotent).
TRANSFER_RETRIES = 2
DOWNLOAD_CHUNK = 1 * MIB
# The longest a presigned URL may live (SigV4's limit).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class ObjectEntry:
    """One object: its spool key, size, ETag (as the server quotes it) and last change."""

    key: str
    size: int
    etag: str | None
    last_modified: datetime


@dataclass(frozen=True)
class Listing:
    """One level of a folder: sub-folders (spool keys, no trailing '/') and objects."""

    dirs: list[str]
    objects: list[ObjectEntry]


@contextmanager
def _answer(what: str, key: str) -> Iterator[None]:
    """Raises a failed request's exception as a BucketError class naming `key`."""
    try:
        yield
    except (obstore.exceptions.BaseError, FileNotFoundError) as exc:  # obstore's not-found is the builtin
        raise from_obstore(exc, what, key) from exc
    except (BotoCoreError, ClientError) as exc:
        raise from_botocore(exc, what, key) from exc


def _entry(location: BucketLocation, key: str, size: int, etag: str | None, modified: datetime) -> ObjectEntry:
    return ObjectEntry(location.relative(key), size, etag, modified)


def _meta_entry(location: BucketLocation, meta) -> ObjectEntry:
    return _entry(location, meta["path"], meta["size"], meta["e_tag"], meta["last_modified"])


class BucketStore:
    """The objects of one bucket spool. Thread-safe: its clients may be shared by threads."""

    def __init__(self, location: BucketLocation, config: S3Config, credentials: StaticCredentials | None = None):
        self.location = location
        self.config = config
        self._session = aws_session(config, credentials)
        self.credentials = ChainCredentials(self._session)
        self.region = region_of(config, self._session)
        self.part_bytes = config.part_mib * MIB
        self._objects = self._obstore(timeout=config.request_timeout_seconds, retries=0)
        self._transfers = self._obstore(timeout=config.transfer_timeout_seconds, retries=TRANSFER_RETRIES)

    def _obstore(self, timeout: float, retries: int) -> S3Store:
        c = self.config
        options = {"connect_timeout": timedelta(seconds=c.connect_timeout_seconds),
                   "timeout": timedelta(seconds=timeout), "pool_idle_timeout": POOL_IDLE,
                   "allow_http": c.allow_http}
        if timeout > c.request_timeout_seconds:  # a stalled download is cut before the whole timeout
            options["read_timeout"] = timedelta(seconds=c.request_timeout_seconds)
        where = {"endpoint": c.endpoint_url} if c.endpoint_url else {"virtual_hosted_style_request": True}
        return S3Store(self.location.bucket, region=self.region, **where, client_options=options,
                       retry_config={"max_retries": retries, "retry_timeout": timedelta(seconds=timeout)},
                       credential_provider=self.credentials)

    @cached_property
    def _boto(self):
        """botocore's S3 client, for conditional DELETE and copy, and listings obstore refuses."""
        from botocore.config import Config

        c = self.config
        settings = Config(connect_timeout=c.connect_timeout_seconds, read_timeout=c.request_timeout_seconds,
                          retries={"total_max_attempts": 1}, max_pool_connections=16,
                          s3={"addressing_style": "path" if c.endpoint_url else "virtual"},
                          # Checksums only where S3 requires one: other servers refuse some.
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required")
        return self._session.create_client("s3", region_name=self.region, endpoint_url=c.endpoint_url or None,
                                           config=settings)

    def close(self) -> None:
        if "_boto" in self.__dict__:
            self._boto.close()

    # ------------------------------------------------------------------ writes

    def create(self, key: str, body: bytes, content_type: str | None = None) -> str | None:
        """Writes `key` only if it does not exist (`If-None-Match: *`): its ETag, or None when
        the key exists (or another create of it is in progress)."""
        full = self.location.key(key)
        try:
            with _answer("create", key):
                return obstore.put(self._objects, full, body, mode="create", attributes=_type(content_type))["e_tag"]
        except (AlreadyExists, PreconditionFailed):
            return None

    def replace(self, key: str, body: bytes, etag: str, content_type: str | None = None) -> str | None:
        """Writes `key` only if it still has `etag` (`If-Match`, a compare-and-swap): the new
        ETag, or None when it has another (or is gone)."""
        full = self.location.key(key)
        try:
            with _answer("replace", key):
                return obstore.put(self._objects, full, body, mode={"e_tag": etag},
                                   attributes=_type(content_type))["e_tag"]
        except (PreconditionFailed, AlreadyExists, NotFound):
            return None

    def put(self, key: str, body: bytes, content_type: str | None = None) -> str | None:
        """Writes `key` whatever is there: its ETag."""
        full = self.location.key(key)
        with _answer("put", key):
            return obstore.put(self._objects, full, body, attributes=_type(content_type))["e_tag"]

    def upload_file(self, key: str, path: Path, content_type: str | None = None) -> str | None:
        """Uploads a local file to `key` (in parts of [s3] part_mib, several at once, when larger
        than one part): its ETag."""
        full, path = self.location.key(key), Path(path)
        size = path.stat().st_size
        with _answer("upload", key):
            return obstore.put(self._transfers, full, path, attributes=_type(content_type),
                               use_multipart=size > self.part_bytes, chunk_size=self.part_bytes,
                               max_concurrency=4)["e_tag"]

    def copy(self, src: str, dst: str, if_match: str | None = None) -> None:
        """Copies `src` to `dst` on the server (no byte passes through here); with `if_match`
        only while `src` still has that ETag (PreconditionFailed otherwise). NotFound without
        `src`. One request: up to 5 GiB."""
        full_src, full_dst = self.location.key(src), self.location.key(dst)
        with _answer("copy", src):
            if if_match is None:
                obstore.copy(self._objects, full_src, full_dst)
            else:
                self._boto.copy_object(Bucket=self.location.bucket, Key=full_dst, CopySourceIfMatch=if_match,
                                       CopySource={"Bucket": self.location.bucket, "Key": full_src})

    def delete(self, keys: Iterable[str]) -> None:
        """Deletes every key (absent ones are no error), up to 1,000 per request."""
        keys = list(keys)
        full = [self.location.key(k) for k in keys]
        if full:
            with _answer("delete", keys[0] + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")):
                obstore.delete(self._objects, full)

    def delete_if(self, key: str, etag: str) -> bool:
        """Deletes `key` only if it still has `etag` (`If-Match` on DELETE): True when deleted,
        False when it has another ETag or is gone. A server that ignores the condition
        deletes it anyway (the probe tells)."""
        full = self.location.key(key)
        try:
            with _answer("delete_if", key):
                self._boto.delete_object(Bucket=self.location.bucket, Key=full, IfMatch=etag)
                return True
        except (PreconditionFailed, NotFound):
            return False

    # ------------------------------------------------------------------ reads

    def get(self, key: str, etag: str | None = None, max_bytes: int | None = None) -> tuple[bytes, str | None] | None:
        """(body, ETag) of `key`, or None when it does not exist. With `etag`: only that
        version (PreconditionFailed otherwise). Over `max_bytes`: TooLarge, body unread."""
        full = self.location.key(key)
        try:
            with _answer("get", key):
                result = obstore.get(self._objects, full, options={"if_match": etag} if etag else None)
                meta = result.meta
                if max_bytes is not None and meta["size"] > max_bytes:
                    raise TooLarge("get", key, f"{meta['size']} bytes, over the limit of {max_bytes}")
                return bytes(result.bytes()), meta["e_tag"]
        except NotFound:
            return None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of `key` (fewer at its end); NotFound without it."""
        full = self.location.key(key)
        with _answer("get_range", key):
            return bytes(obstore.get_range(self._objects, full, start=start, end=end))

    def head(self, key: str) -> ObjectEntry | None:
        full = self.location.key(key)
        try:
            with _answer("head", key):
                return _meta_entry(self.location, obstore.head(self._objects, full))
        except NotFound:
            return None

    def download_file(self, key: str, path: Path, etag: str | None = None) -> ObjectEntry:
        """Streams `key` into the local file `path` (written beside it, then renamed: never a
        partial file under its name); with `etag` only that version. NotFound without it."""
        full, path = self.location.key(key), Path(path)
        fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, _answer("download", key):
                result = obstore.get(self._transfers, full, options={"if_match": etag} if etag else None)
                for chunk in result.stream(min_chunk_size=DOWNLOAD_CHUNK):
                    out.write(chunk)
                meta = result.meta
                if out.tell() != meta["size"]:
                    raise BucketError("download", key, f"got {out.tell()} of {meta['size']} bytes")
            os.replace(part, path)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise
        return _meta_entry(self.location, meta)

    def presign_get(self, key: str, seconds: int) -> str:
        """A URL that GETs `key` without credentials for `seconds`."""
        if not 0 < seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"a presigned URL lives 1 to {MAX_PRESIGN_SECONDS} seconds, not {seconds}")
        full = self.location.key(key)
        with _answer("presign", key):
            return obstore.sign(self._objects, "GET", full, timedelta(seconds=seconds))

    # ------------------------------------------------------------------ listings

    def list(self, folder: str = "") -> Iterator[ObjectEntry]:
        """Every object under spool folder `folder` ('' = the whole spool), at any depth, in
        key order, a page at a time. A key another client wrote that the key rules refuse
        (`a//b`, `..`) is listed as it is; no other method takes it."""
        prefix = self.location.folder(folder)
        last = None
        try:
            with _answer("list", folder or "/"):
                for page in obstore.list(self._objects, prefix.rstrip("/") or None, chunk_size=1000):
                    for meta in page:
                        last = meta["path"]
                        yield _meta_entry(self.location, meta)
        except BucketError as exc:
            if not isinstance(exc.__cause__, obstore.exceptions.InvalidPathError):
                raise
            yield from self._boto_list(folder, prefix, start_after=last)

    def _boto_list(self, folder: str, prefix: str, start_after: str | None) -> Iterator[ObjectEntry]:
        pages = self._boto.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=prefix, **({"StartAfter": start_after} if start_after else {}))
        with _answer("list", folder or "/"):
            for page in pages:
                for o in page.get("Contents", []):
                    yield _entry(self.location, o["Key"], o["Size"], o.get("ETag"), o["LastModified"])

    def list_dirs(self, folder: str = "") -> Listing:
        """One level of spool folder `folder`: its sub-folders and its objects."""
        prefix = self.location.folder(folder)
        try:
            with _answer("list", folder or "/"):
                found = obstore.list_with_delimiter(self._objects, prefix.rstrip("/") or None)
                return Listing([self.location.relative(p) for p in found["common_prefixes"]],
                               [_meta_entry(self.location, m) for m in found["objects"]])
        except BucketError as exc:
            if not isinstance(exc.__cause__, obstore.exceptions.InvalidPathError):
                raise
        dirs, objects = [], []
        with _answer("list", folder or "/"):
            pages = self._boto.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                dirs += [self.location.relative(p["Prefix"].rstrip("/")) for p in page.get("CommonPrefixes", [])]
                objects += [_entry(self.location, o["Key"], o["Size"], o.get("ETag"), o["LastModified"])
                            for o in page.get("Contents", [])]
        return Listing(dirs, objects)


def _type(content_type: str | None) -> dict | None:
    return {"Content-Type": content_type} if content_type else None
