"""Sending a file opened by daemon/spool/job_files.py: aiohttp's FileResponse (Range, ETag,
sendfile) on /proc/self/fd/N, so the bytes sent are the opened file's, whatever its path
has become; the descriptor is closed once the answer is sent."""

from __future__ import annotations

from aiohttp import web

from daemon.view.for_fronts import OpenedFile


class OpenedFileResponse(web.FileResponse):
    def __init__(self, opened: OpenedFile, headers: dict[str, str]):
        super().__init__(opened.proc_path, headers=headers)
        self._opened = opened

    async def prepare(self, request: web.BaseRequest):
        try:
            return await super().prepare(request)
        finally:
            self._opened.close()
