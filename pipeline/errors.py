"""The error codes a kind raises (contract/errors.py), under the name plugins import."""

from contract.errors import RETRYABLE, ErrorCode, JobCanceled, JobError

__all__ = ["RETRYABLE", "ErrorCode", "JobCanceled", "JobError"]
