"""Where a bucket spool lives: `[spool] root = "s3://BUCKET/PREFIX"`, and its keys.

Every key the daemon names is relative to the spool's prefix and checked here before any
request is made: a key that could climb out of the prefix on a server that resolves paths
(`..`), that a client library would silently rewrite (empty segments, a leading or
trailing `/`), or that cannot travel in a request line (control characters) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "s3://"
# S3's bucket naming rules (the general-purpose buckets of AWS; R2, MinIO and SeaweedFS
# accept these names too): 3-63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# S3 limits a key to 1024 bytes; the spool's own names must leave room under the prefix.
MAX_KEY_BYTES = 1024


def is_bucket_url(value: object) -> bool:
    """Whether a `[spool] root` value names a bucket rather than a folder."""
    return isinstance(value, str) and value.lower().startswith(SCHEME)


def check_bucket_name(name: str) -> str:
    if not _BUCKET.fullmatch(name):
        raise ValueError(f"bucket name {name!r} is not valid: 3-63 lowercase letters, digits, '.' and '-', "
                         "starting and ending with a letter or digit")
    if ".." in name or _IPV4.fullmatch(name):
        raise ValueError(f"bucket name {name!r} is not valid: no '..' and not an IP address")
    return name


def check_key(key: str, what: str = "key") -> str:
    """`key` if it is a plain relative key: segments joined by single '/', none empty, '.' or
    '..', no control characters, at most MAX_KEY_BYTES; else ValueError naming the fault."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{what} {key!r} is empty")
    if key.startswith("/") or key.endswith("/"):
        raise ValueError(f"{what} {key!r} starts or ends with '/'")
    if _CONTROL.search(key):
        raise ValueError(f"{what} {key!r} holds a control character")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"{what} {key!r} has an empty, '.' or '..' segment")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"{what} {key[:40]!r}… is longer than {MAX_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class BucketLocation:
    """A bucket and the prefix (no leading or trailing '/', maybe empty) the spool lives under."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        check_bucket_name(self.bucket)
        if self.prefix:
            check_key(self.prefix, "prefix")

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    def __str__(self) -> str:
        return self.url

    def key(self, relative: str) -> str:
        """The bucket key of a spool key (`outbox/j1/status.json`), checked."""
        check_key(relative)
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def folder(self, relative: str) -> str:
        """The bucket key prefix that lists everything under a spool folder ('' = the whole
        spool): `PREFIX/inbox/`."""
        inner = f"{check_key(relative, 'folder')}/" if relative else ""
        return f"{self.prefix}/{inner}" if self.prefix else inner

    def relative(self, key: str) -> str:
        """A bucket key under the spool's prefix, as a spool key."""
        start = f"{self.prefix}/" if self.prefix else ""
        if not key.startswith(start):
            raise ValueError(f"key {key!r} is not under {self.url}")
        return key[len(start):]


def parse_bucket_url(url: str) -> BucketLocation:
    """`s3://BUCKET[/PREFIX]` as a BucketLocation; the prefix loses its leading and trailing
    '/'. A ValueError names what is wrong."""
    if not is_bucket_url(url):
        raise ValueError(f"{url!r} is not an s3:// URL (s3://BUCKET/PREFIX)")
    rest = url[len(SCHEME):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (s3://BUCKET/PREFIX)")
    if "?" in rest or "#" in rest:
        raise ValueError(f"{url!r}: a spool URL takes no '?' or '#' (s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    try:
        return BucketLocation(check_bucket_name(bucket), check_key(prefix, "prefix") if prefix else "")
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
