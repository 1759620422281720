"""A Hugging Face hub on loopback, for tests: a real HTTP server (http.server in a thread on
127.0.0.1) serving local folders as model repos in the hub's HTTP layout, as huggingface_hub's
client (HfApi.model_info, snapshot_download, hf_hub_download) asks for them. Point HF_ENDPOINT
at `url`; no test reaches the internet.

    GET  /api/models/ORG/NAME[/revision/REV][?blobs=True]   {"id", "sha", "siblings": [{rfilename, size, blobId, lfs}]}
    GET  /api/models/ORG/NAME/tree/REV[?recursive=True]     [{"type", "path", "oid", "size", "lfs"}]
    HEAD /ORG/NAME/resolve/REV/PATH                         X-Repo-Commit, ETag (+ X-Linked-Etag, X-Linked-Size for LFS), Content-Length
    GET  /ORG/NAME/resolve/REV/PATH                         the bytes (Range: bytes=A-[B] → 206)

As the hub: ETag is the git blob id (sha1 of "blob SIZE\\0" + bytes); weight files are LFS
files, whose X-Linked-Etag is their sha256. A missing repo answers 401 X-Error-Code: RepoNotFound,
a missing revision 404 RevisionNotFound, a missing file 404 EntryNotFound. REV is "main" or the
commit (a sha1 of the file list). `hold()` makes a file's GET wait for an event; `die_during()`
stops the whole server after part of a file's bytes (once every file's HEAD has come);
`claim_size()` makes the file lists say a file is that large (a repo too big for any disk).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<what>revision|tree)/(?P<rev>[^/]+)(?:/(?P<sub>.*))?)?$")


@dataclass
class RepoFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        """The git blob id: of the bytes, or for an LFS file of its pointer file."""
        body = self.pointer() if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    claimed: int | None = None  # the size the file lists give, when not its own

    @property
    def listed_size(self) -> int:
        return len(self.data) if self.claimed is None else self.claimed

    def lfs_info(self, sha_key: str) -> dict | None:
        return {sha_key: self.sha256, "size": self.listed_size, "pointerSize": len(self.pointer())} if self.lfs else None


class Repo:
    def __init__(self, repo_id: str, folder: Path):
        self.id = repo_id
        self.files = {p.relative_to(folder).as_posix(): RepoFile(p.relative_to(folder).as_posix(), p.read_bytes())
                      for p in sorted(Path(folder).rglob("*")) if p.is_file()}
        listing = "".join(f"{f.path}\0{f.blob_id}\n" for f in self.files.values()).encode()
        self.sha = hashlib.sha1(listing).hexdigest()

    def knows(self, rev: str) -> bool:
        return rev in ("main", self.sha)


class HubServer:
    """`HubServer({"org/name": folder, …}).start()`; `url`; `stop()`, `start()` again (same port)."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = {rid: Repo(rid, folder) for rid, folder in repos.items()}
        self.port = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) as they came
        self.holds: dict[tuple[str, str], threading.Event] = {}
        self.deaths: dict[tuple[str, str], int] = {}
        self.connections: set = set()  # open sockets: a stopped server drops them all
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="hubserver").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
        for sock in list(self.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def running(self) -> bool:
        return self._server is not None

    def hold(self, repo: str, path: str) -> threading.Event:
        """GET of this file waits (before answering) until the returned event is set."""
        self.holds[(repo, path)] = event = threading.Event()
        return event

    def claim_size(self, repo: str, path: str, size: int) -> None:
        """The file lists (API, tree) give this size for the file; its bytes stay as they are."""
        self.repos[repo].files[path].claimed = size

    def die_during(self, repo: str, path: str, after_bytes: int) -> None:
        """GET of this file sends `after_bytes` of it, then the server stops and drops it."""
        self.deaths[(repo, path)] = after_bytes


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.server_hub.connections.add(self.connection)

    def finish(self):
        self.server_hub.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    # -- routing ------------------------------------------------------------------------
    def _answer(self, head: bool) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        path = unquote(url.path)
        hub.requests.append((self.command, url.path))
        if m := RESOLVE.match(url.path):
            return self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["path"]), head)
        if (m := API.match(url.path)) and not head:
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            repo = self._repo(unquote(m["repo"]), unquote(m["rev"] or "main"))
            if repo is None:
                return None
            if m["what"] == "tree":
                return self._json(self._tree(repo, m["sub"] or "", query.get("recursive", "").lower() == "true"))
            return self._json(self._info(repo, query.get("blobs", "").lower() == "true"))
        self._error(404, None, f"no route {path}")

    def _repo(self, repo_id: str, rev: str) -> Repo | None:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
        elif not repo.knows(rev):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        else:
            return repo
        return None

    # -- the API ------------------------------------------------------------------------
    @staticmethod
    def _info(repo: Repo, blobs: bool) -> dict:
        siblings = []
        for f in repo.files.values():
            entry: dict = {"rfilename": f.path}
            if blobs:
                entry.update(size=f.listed_size, blobId=f.blob_id)
                if f.lfs:
                    entry["lfs"] = f.lfs_info("sha256")
            siblings.append(entry)
        return {"_id": repo.sha[:24], "id": repo.id, "modelId": repo.id, "author": repo.id.split("/")[0],
                "sha": repo.sha, "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                "tags": ["diffusers"], "library_name": "diffusers", "siblings": siblings,
                "createdAt": "2025-01-01T00:00:00.000Z", "lastModified": "2025-01-01T00:00:00.000Z"}

    @staticmethod
    def _tree(repo: Repo, sub: str, recursive: bool) -> list[dict]:
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        out, folders = [], set()
        for f in repo.files.values():
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    folders.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": f.blob_id, "size": f.listed_size, "path": f.path}
                if f.lfs:
                    entry["lfs"] = f.lfs_info("oid")
                out.append(entry)
        dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(folders)]
        return dirs + out

    # -- files ----------------------------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        hub = self.server_hub
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": repo.sha})
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{f.blob_id}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))})
        start, end, status = 0, len(f.data), 200
        if not head and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))):
            start, end, status = int(m[1]), (int(m[2]) + 1 if m[2] else len(f.data)), 206
            if start >= len(f.data):
                return self._error(416, None, "range not satisfiable", {"Content-Range": f"bytes */{len(f.data)}"})
            end = min(end, len(f.data))
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(f.data)}"
        if not head and (event := hub.holds.get((repo_id, path))) is not None:
            event.wait(60)
        body = f.data[start:end]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        dies_after = hub.deaths.pop((repo_id, path), None)
        if dies_after is None:
            self.wfile.write(body)
            return
        # Once the client has asked for every file's metadata (its HEAD retries back off for
        # half a minute; its GET retries take a second each): die in the middle of this one.
        every = {f"/{repo_id}/resolve/{rev}/{p}" for p in repo.files}
        for _ in range(200):
            if every <= {p for m, p in hub.requests if m == "HEAD"}:
                break
            time.sleep(0.05)
        self.wfile.write(body[:dies_after])
        self.wfile.flush()
        self.close_connection = True
        hub.stop()  # no connection and no new one from now on (this one too)

    # -- answers ------------------------------------------------------------------------
    def _json(self, doc) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
