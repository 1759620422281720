"""Error codes shared by the daemon and the workers (SPEC §4)."""

from __future__ import annotations

import errno
from enum import StrEnum

# The mount itself is broken (a dead sshfs, a stale NFS handle), not a missing file.
MOUNT_ERRNOS = frozenset({errno.ENOTCONN, errno.EIO, errno.ESTALE, errno.ENODEV, errno.EHOSTDOWN,
                          errno.ECONNABORTED, errno.ECONNRESET, errno.ETIMEDOUT, errno.ENXIO})
# The spool cannot be written now (full, read-only, no permission); it may come back.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})


class ErrorCode(StrEnum):
    INVALID_JOB = "invalid_job"
    MISSING_INPUT = "missing_input"
    UNSUPPORTED_INPUT = "unsupported_input"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_LOAD_FAILED = "model_load_failed"
    GPU_OUT_OF_MEMORY = "gpu_out_of_memory"
    WORKER_CRASHED = "worker_crashed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    INTERNAL = "internal"


RETRYABLE = {ErrorCode.WORKER_CRASHED, ErrorCode.TIMEOUT, ErrorCode.GPU_OUT_OF_MEMORY, ErrorCode.INTERNAL}


class JobError(Exception):
    """A job failed for a reason the user can act on; `code` is one of ErrorCode."""

    def __init__(self, code: ErrorCode | str, message: str):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def to_status(self) -> dict:
        return {"code": str(self.code), "message": self.message, "retryable": self.code in RETRYABLE}


class JobCanceled(Exception):
    """Raised inside a running kind when the job was canceled; the worker stays up."""
