"""A loopback server that speaks the part of the Hugging Face Hub's protocol hf_hub_download uses, plus plain file URLs.

HEAD/GET /{owner}/{name}/resolve/{revision}/{path}: 200 with X-Repo-Commit, ETag, X-Linked-Etag and X-Linked-Size
(an LFS file: its etag is the content's sha256; a git file: a 40-hex blob id), Content-Length, Accept-Ranges;
a `Range: bytes=N-` request gets 206 with Content-Range. GET /files/{name}: the same bytes as a plain URL (a GitHub
release asset). A file registered with `cut_at` has its first full GET cut after that many bytes (the connection
closed mid-body, Content-Length promised in full), once. Every request is recorded (method, path, Range,
Authorization) for the tests to assert on.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

from tests.support.quiet_server import QuietHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Served:
    content: bytes
    lfs: bool = True
    etag: str | None = None  # None: the content's own sha256 (LFS) or a blob id (git file)
    cut_at: int | None = None  # cut the first full GET after this many bytes
    cuts_left: int = 1

    def real_etag(self) -> str:
        if self.etag is not None:
            return self.etag
        return hashlib.sha256(self.content).hexdigest() if self.lfs else hashlib.sha1(self.content).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeHub:
    files: dict[str, Served] = field(default_factory=dict)  # "owner/name/path" or "files/name" -> Served
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def add_hub_file(self, repo: str, path: str, content: bytes, **kwargs) -> Served:
        served = self.files[f"{repo}/{path}"] = Served(content, **kwargs)
        return served

    def add_url_file(self, name: str, content: bytes, **kwargs) -> str:
        self.files[f"files/{name}"] = Served(content, **kwargs)
        return f"{self.url}/files/{name}"

    def ranged_gets(self, suffix: str) -> list[str]:
        return [r.range for r in self.requests if r.method == "GET" and r.path.endswith(suffix) and r.range]


def start_fake_hub() -> tuple[FakeHub, QuietHTTPServer]:
    hub = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(self.path.split("?")[0])
            hub.requests.append(
                Request(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
            key = _key(path)
            served = hub.files.get(key) if key else None
            if served is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = _range_start(self.headers.get("Range"))
            data = served.content[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(served.content) - 1}/{len(served.content)}")
            if not key.startswith("files/"):
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{served.real_etag()}"')
                if served.lfs:
                    self.send_header("X-Linked-Etag", f'"{served.real_etag()}"')
                    self.send_header("X-Linked-Size", str(len(served.content)))
            self.end_headers()
            if not body:
                return
            if served.cut_at is not None and served.cuts_left > 0 and not start:
                served.cuts_left -= 1
                self.wfile.write(data[: served.cut_at])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

    server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hub, server


def _key(path: str) -> str | None:
    parts = path.lstrip("/").split("/")
    if parts[0] == "files" and len(parts) == 2:
        return path.lstrip("/")
    if len(parts) >= 5 and parts[2] == "resolve":
        return "/".join(parts[:2] + parts[4:])
    return None


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    return int(header[len("bytes=") :].split("-")[0] or 0)
