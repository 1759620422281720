"""What a failed bucket request means to the daemon: one of a few classes it can act on,
each naming the key and the server's answer."""

from __future__ import annotations

import re

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


class BucketError(Exception):
    """A bucket request failed in a way none of the classes below names (e.g. a 400)."""

    def __init__(self, what: str, key: str, answer: str, status: int | None = None):
        super().__init__(f"{what} {key}: {answer}")
        self.key, self.answer, self.status = key, answer, status


class NotFound(BucketError):
    """No such object (or no such bucket)."""


class PreconditionFailed(BucketError):
    """A condition (If-Match, If-None-Match, a copy source's ETag) did not hold."""


class AlreadyExists(BucketError):
    """An exclusive create found the key taken."""


class Refused(BucketError):
    """401/403, or no credentials: the credentials or the bucket's policy do not allow it.
    Retrying does not help; the operator must act."""


class Unavailable(BucketError):
    """No answer: connection refused or cut, a timeout, a 5xx or a 429. Transient: the
    caller tries again on its next turn. For a write the outcome is unknown (the server may
    have applied it before the answer was lost); the protocol reads back to find out."""


class TooLarge(BucketError):
    """The object is larger than the reader's limit; its body was not read."""


def by_status(status: int | None, code: str = "") -> type[BucketError]:
    if status is None:
        return Unavailable
    if status == 404:
        return NotFound
    if status in (409, 412):  # 409: a conflicting conditional write in progress (AWS)
        return PreconditionFailed
    if status in (401, 403):
        return Refused
    if status >= 500 or status == 429 or code == "SlowDown":
        return Unavailable
    return BucketError


def from_obstore(exc: Exception, what: str, key: str) -> BucketError:
    """The class of an obstore exception, with the server's answer in one line."""
    from obstore import exceptions as oe

    text = str(exc).split("\n\nDebug source:", 1)[0]
    status_match, code_match = _STATUS.search(text), _CODE.search(text)
    status = int(status_match.group(1)) if status_match else None
    code = code_match.group(1) if code_match else ""
    if status is not None:
        message = _MESSAGE.search(text)
        answer = f"{status} {code}: {message.group(1) if message else ''}".rstrip(": ")
    else:
        answer = " ".join(text.split())[:300]
    if code == "NoSuchBucket":  # not a missing object: the spool itself is gone
        cls: type[BucketError] = BucketError
    elif isinstance(exc, oe.AlreadyExistsError):
        cls = AlreadyExists
    elif isinstance(exc, oe.PreconditionError):
        cls = PreconditionFailed
    elif isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)):
        cls = Refused
    elif isinstance(exc, (oe.NotFoundError, FileNotFoundError)):
        cls = NotFound
    elif isinstance(exc, oe.GenericError):
        cls = by_status(status, code)
    else:
        cls = BucketError
    return cls(what, key, answer, status)


def from_botocore(exc: Exception, what: str, key: str) -> BucketError:
    """The class of a botocore exception (a ClientError carries the status and code)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code", "")
        cls = BucketError if code == "NoSuchBucket" else by_status(status, code)
        return cls(what, key, f"{status} {code}: {error.get('Message', '')}".rstrip(": "), status)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Refused(what, key, str(exc))
    cls = Unavailable if isinstance(exc, (ConnectionError, HTTPClientError)) else BucketError
    return cls(what, key, " ".join(str(exc).split())[:300])
