"""A BucketStore that counts the requests it sends, by kind: the figure behind the design's
"requests per job" (docs/bucket-spool.md) and the bench's calibration.

A listing counts one request per started page of 1,000 keys, a bulk delete one per 1,000
keys (none for an empty one); every other call is one request (a multipart upload is
counted as one: it is the media's own transfer).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

PAGE = 1000
ONE_REQUEST = ("create", "replace", "put", "upload_file", "copy", "delete_if", "get", "get_range", "head",
               "download_file", "list_dirs")


class CountingStore:
    """Passes every call to `store`, counting requests in `counts` (kind → number)."""

    def __init__(self, store):
        self.store = store
        self.counts: Counter[str] = Counter()

    def __getattr__(self, name: str):
        attr = getattr(self.store, name)
        if name not in ONE_REQUEST:
            return attr

        def counted(*args, **kwargs):
            self.counts[name] += 1
            return attr(*args, **kwargs)

        return counted

    def delete(self, keys) -> None:
        keys = list(keys)
        self.counts["delete"] += -(-len(keys) // PAGE)
        self.store.delete(keys)

    def list(self, folder: str = "") -> Iterator:
        self.counts["list"] += 1
        for n, entry in enumerate(self.store.list(folder), 1):
            if n % PAGE == 0:
                self.counts["list"] += 1
            yield entry

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> Counter[str]:
        """The counts so far; counting starts again from zero."""
        counts, self.counts = self.counts, Counter()
        return counts
