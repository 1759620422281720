"""Uploads cut short: a daemon SIGKILLed while a slow multipart POST streams into its inbox
staging folder removes that folder when it starts again, and nothing else (another live
host's upload in progress, a user's own dot-folders); a host that dies mid-upload and does
not come back has its staging removed by another host once its lease has run out."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support import Daemon, holds, wait_for, wait_status

BOUNDARY = "vidspoolstaging"
DATA = b"0123456789abcdef" * 4096  # 64 KiB


class SlowUpload:
    """A multipart POST of a job and one file, sent in two halves on a raw socket."""

    def __init__(self, api: str, job_id: str):
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"job\"\r\n\r\n"
                f"{json.dumps({'id': job_id, 'kind': 'probe', 'inputs': {'data': 'data.bin'}})}\r\n"
                f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        self.body = head + DATA + f"\r\n--{BOUNDARY}--\r\n".encode()
        url = urlsplit(api)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        self.sock.sendall((f"POST /api/v1/jobs HTTP/1.1\r\nHost: {url.netloc}\r\n"
                           f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                           f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n").encode())
        self.sock.sendall(self.body[: len(head) + len(DATA) // 2])  # the job, and half the file

    def finish(self) -> bytes:
        self.sock.sendall(self.body[len(self.body) - len(DATA) // 2 - len(f"\r\n--{BOUNDARY}--\r\n"):])
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        return answer


def staging(root: Path, host: str) -> list[str]:
    return sorted(n for n in os.listdir(root / "inbox") if n.startswith(".api-") and n.endswith(f".{host}.part"))


def test_staging_of_a_killed_upload_goes_at_restart_or_once_its_host_is_dead(tmp_path):
    root = tmp_path / "spool"
    slow = {"VIDSPOOL_API__READ_TIMEOUT_SECONDS": "60"}
    a = Daemon(root, host="a", **slow).start()
    b = Daemon(root, host="b", **slow).start()
    try:
        (root / "inbox" / ".mine.part").mkdir()  # a user's own staging, e.g. `vidspool submit` copying
        (root / "inbox" / ".mine.part" / "job.json").write_text("{}")
        to_a, to_b = SlowUpload(a.api, "cut-short"), SlowUpload(b.api, "slow-but-alive")
        wait_for(lambda: staging(root, "a") and staging(root, "b"), 10, "both uploads staged")
        wait_for(lambda: os.listdir(root / "inbox" / staging(root, "b")[0]), 10, "b receiving the file")
        [left] = staging(root, "a")
        a.kill()  # SIGKILL mid-upload
        to_a.sock.close()
        assert staging(root, "a") == [left]  # what a SIGKILL leaves
        a.start()
        assert staging(root, "a") == []  # removed before the API listens again
        assert len(staging(root, "b")) == 1 and (root / "inbox" / ".mine.part" / "job.json").is_file()
        answer = to_b.finish()  # b's upload, in progress all along, arrives whole
        assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
        assert wait_status(root, "slow-but-alive", daemon=b)["state"] == "completed"
        assert (root / "outbox" / "slow-but-alive" / "input" / "data.bin").read_bytes() == DATA
        # b dies mid-upload and stays dead: a removes its staging once b's lease (4 s) has run out.
        to_b = SlowUpload(b.api, "never-finished")
        wait_for(lambda: staging(root, "b"), 10, "b's second upload staged")
        b.kill()
        to_b.sock.close()
        holds(lambda: len(staging(root, "b")) == 1, 2, "b's staging while its lease runs")
        wait_for(lambda: staging(root, "b") == [], 20, "b's staging removed by a")
        assert (root / "inbox" / ".mine.part" / "job.json").is_file()
        assert a.proc.poll() is None
        assert any(e["event"] == "recovery.staging_removed" and e["staging_host"] == "b" for e in a.log_events())
    finally:
        for d in (a, b):
            d.stop() if d.proc.poll() is None else None
