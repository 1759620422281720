"""Text for one log line or error message: an exception in a line (error_line), and a file
name whose bytes need not be UTF-8 (printable). The intake, the drop reader and the arbiter
all write them."""

from __future__ import annotations


def error_line(exc: BaseException, limit: int = 300) -> str:
    """An exception in one line: its type and the start of its message."""
    return f"{type(exc).__name__}: {str(exc)[:limit]}"


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
