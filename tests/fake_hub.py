"""A local stand-in for the Hugging Face Hub's download API, serving real tiny checkpoint folders.

It answers what huggingface_hub's ``snapshot_download`` asks (``GET /api/models/<repo>[/revision/<rev>]``
for the commit, ``GET /api/models/<repo>/tree/<commit>`` for the file list, ``HEAD`` and
``GET /<repo>/resolve/<commit>/<file>`` with ``Range``), every file
with its SHA-256 as the LFS ETag, as the Hub does for weight files. Switches reproduce what goes
wrong in the field: a gated repository (401 without a token, 403 with one), a connection cut after
some bytes, and a file whose bytes are damaged in transit (right ETag, wrong content).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    """Configuration and request log of one running server.

    Attributes:
        repos: repository id -> the folder served as that repository.
        gated: repository ids answered as gated.
        cut_after: (repo id, file) -> bytes sent before the connection is closed, on the first GET only.
        corrupt: (repo id, file) pairs served with one byte flipped.
        requests: (method, path, Range header or "") of every request, in order.
    """

    repos: dict[str, Path]
    gated: set[str] = field(default_factory=set)
    cut_after: dict[tuple[str, str], int] = field(default_factory=dict)
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""

    def gets(self, name: str) -> list[str]:
        """The Range headers ("" for none) of the GETs of files named ``name``."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(f"/{name}") and "/resolve/" in p]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    """The request handler class serving ``hub``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _gated(self, repo: str) -> bool:
            if repo not in hub.gated:
                return False
            msg = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            code = 403 if self.headers.get("Authorization") else 401
            self._send(
                code,
                json.dumps({"error": msg}).encode(),
                {"X-Error-Code": "GatedRepo", "X-Error-Message": msg},
            )
            return True

        def _route(self) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Range", "")))
            info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/?]+)?(?:\?.*)?", self.path)
            if info:
                repo = info.group(1)
                if self._gated(repo):
                    return
                if repo not in hub.repos:
                    return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
                body = {
                    "id": repo,
                    "sha": COMMIT,
                    "siblings": [{"rfilename": f} for f in _files(hub.repos[repo])],
                }
                return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
            tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/?]+(?:\?.*)?", self.path)
            if tree:
                repo = tree.group(1)
                if self._gated(repo):
                    return
                if repo not in hub.repos:
                    return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
                entries = []
                for name in _files(hub.repos[repo]):
                    data = (hub.repos[repo] / name).read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                    lfs = {"oid": sha, "size": len(data), "pointerSize": 134}
                    entries.append(
                        {"type": "file", "path": name, "size": len(data), "oid": sha[:40], "lfs": lfs}
                    )
                return self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
            res = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path)
            if not res or res.group(1) not in hub.repos and res.group(1) not in hub.gated:
                return self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"})
            repo, name = res.groups()
            if self._gated(repo):
                return
            path = hub.repos[repo] / name
            if not path.is_file():
                return self._send(
                    404, b"not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
                )
            data = path.read_bytes()
            meta = {
                "X-Repo-Commit": COMMIT,
                "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                "Accept-Ranges": "bytes",
            }
            if (repo, name) in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if self.command == "HEAD":
                self.send_response(200)
                for k, v in meta.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return
            start = 0
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if rng:
                start = int(rng.group(1))
            cut = hub.cut_after.pop((repo, name), None)
            self.send_response(206 if rng else 200)
            for k, v in meta.items():
                self.send_header(k, v)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if cut is not None:  # the connection drops mid-file
                self.wfile.write(data[start : start + cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data[start:])

        do_GET = do_HEAD = _route

    return Handler


class FakeHubServer:
    """Runs a `FakeHub` on 127.0.0.1 in a thread (a context manager); ``hub.url`` is its endpoint."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(hub))
        hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.hub

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
