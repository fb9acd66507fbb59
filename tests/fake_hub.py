"""A local stand-in for the Hugging Face Hub's download API, serving real tiny checkpoint folders.

Two HTTP servers on 127.0.0.1, like the Hub and its CDN (two origins):

* the Hub answers ``GET /api/models/<repo>/revision/<rev>`` (``sha`` and ``siblings[].rfilename``),
  and ``HEAD``/``GET /<repo>/resolve/<rev>/<file>``: a git file directly, with ``X-Repo-Commit``, its
  git blob hash as ``ETag`` and ``Content-Length``; an LFS file (weights: `LFS_SUFFIXES`) with a
  ``302`` to the CDN carrying ``X-Repo-Commit``, ``X-Linked-Etag`` (the content's sha256) and
  ``X-Linked-Size``, as the real Hub does;
* the CDN answers ``GET /cdn/<repo>/<file>`` with the bytes, honouring ``Range: bytes=N-`` (206).

No Xet headers are sent, so huggingface_hub never tries Xet. Switches reproduce what goes wrong in
the field: a gated repository (401 without a token, 403 with one, ``X-Error-Code: GatedRepo``), a
bare 401 (what a private repository answers), a connection cut after some bytes of the first GET of
a file, and a file whose bytes are damaged in transit (the right ETag, a wrong byte).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Files the fake Hub keeps in LFS (the real repositories' .gitattributes track these suffixes).
LFS_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin", ".pth")


@dataclass(frozen=True)
class Request:
    """One request a server saw.

    Attributes:
        server: "hub" or "cdn".
        method: "GET" or "HEAD".
        path: the URL path.
        range: its Range header ("" for none).
        auth: it carried an Authorization header.
    """

    server: str
    method: str
    path: str
    range: str
    auth: bool


@dataclass
class FakeHub:
    """Configuration and request log of the running servers.

    Attributes:
        repos: repository id -> the folder served as that repository.
        gated: repository ids whose files are refused as gated.
        unauthorized: repository ids whose files get a bare 401 (no error code, as for a private repo).
        cut_after: (repo id, file) -> bytes sent before the connection is closed, on the first GET only.
        corrupt: (repo id, file) pairs served with their first byte flipped (and the right ETag).
        requests: every request, in order.
        answers: (path, status code) of every response, in order.
        url: the Hub's endpoint (``HF_ENDPOINT``); cdn_url: the CDN's.
    """

    repos: dict[str, Path]
    gated: set[str] = field(default_factory=set)
    unauthorized: set[str] = field(default_factory=set)
    cut_after: dict[tuple[str, str], int] = field(default_factory=dict)
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    answers: list[tuple[str, int]] = field(default_factory=list)
    url: str = ""
    cdn_url: str = ""

    def gets(self, name: str) -> list[str]:
        """The Range headers ("" for none) of the GETs of the bytes of files named ``name``."""
        return [
            r.range
            for r in self.requests
            if r.method == "GET" and r.path.endswith(f"/{name}") and "/api/" not in r.path
        ]


def git_blob_sha1(data: bytes) -> str:
    """The git blob hash of ``data`` (the Hub's ETag of a file kept in git)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def handler(hub: FakeHub, server: str) -> type[http.server.BaseHTTPRequestHandler]:
    """The request handler class of ``server`` ("hub" or "cdn") serving ``hub``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            """Quiet: pytest output stays readable."""

        def send_response(self, code: int, message: str | None = None) -> None:
            hub.answers.append((unquote(self.path.split("?")[0]), code))
            super().send_response(code, message)

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _route(self) -> None:
            path = unquote(self.path.split("?")[0])
            auth = self.headers.get("Authorization") is not None
            hub.requests.append(Request(server, self.command, path, self.headers.get("Range", ""), auth))
            if server == "cdn":
                cdn = re.fullmatch(r"/cdn/([^/]+/[^/]+)/(.+)", path)
                if cdn is None or cdn.group(1) not in hub.repos:
                    return self._send(404, b"no such blob")
                return self._bytes(*cdn.groups())
            info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/[^/]+", path)
            if info:
                return self._info(info.group(1))
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
            if resolve is None or resolve.group(1) not in hub.repos:
                return self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
            return self._resolve(*resolve.groups())

        def _info(self, repo: str) -> None:
            """The repository's metadata: public even for a gated repository, as on the Hub."""
            if repo not in hub.repos:
                return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
            folder = hub.repos[repo]
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            body = {
                "id": repo,
                "sha": COMMIT,
                "gated": "manual" if repo in hub.gated else False,
                "siblings": [{"rfilename": f} for f in files],
            }
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _resolve(self, repo: str, name: str) -> None:
            if repo in hub.gated:
                message = (
                    f"Access to model {repo} is restricted. You must have access to it and be authenticated."
                )
                code = 403 if self.headers.get("Authorization") else 401
                return self._send(
                    code, message.encode(), {"X-Error-Code": "GatedRepo", "X-Error-Message": message}
                )
            if repo in hub.unauthorized:
                return self._send(401, b"Unauthorized")
            path = hub.repos[repo] / name
            if not path.is_file():
                return self._send(
                    404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
                )
            data = path.read_bytes()
            if not name.endswith(LFS_SUFFIXES):
                return self._bytes(repo, name, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_sha1(data)}"'})
            sha256 = hashlib.sha256(data).hexdigest()
            self._send(
                302,
                headers={
                    "Location": f"{hub.cdn_url}/cdn/{repo}/{name}",
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{git_blob_sha1(data)}"',  # a git hash (the real Hub: its pointer's), not the sha256
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                },
            )

        def _bytes(self, repo: str, name: str, headers: dict[str, str] | None = None) -> None:
            """The file's bytes (damaged or cut off when switched so), from ``Range: bytes=N-`` on."""
            data = (hub.repos[repo] / name).read_bytes()
            if (repo, name) in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(rng.group(1)) if rng else 0
            self.send_response(206 if rng else 200)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Accept-Ranges", "bytes")
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if self.command == "HEAD":
                return
            cut = hub.cut_after.pop((repo, name), None) if self.command == "GET" else None
            if cut is None:
                self.wfile.write(data[start:])
                return
            self.wfile.write(data[start : start + cut])  # then the connection drops mid-file
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

        do_GET = do_HEAD = _route

    return Handler


class FakeHubServer:
    """Runs the Hub and CDN servers of a `FakeHub` in threads (a context manager yielding the hub)."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.servers = [
            http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(hub, name)) for name in ("hub", "cdn")
        ]
        hub.url, hub.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)
        # A short poll interval: shutting down waits for one.
        self.threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in self.servers
        ]

    def __enter__(self) -> FakeHub:
        for thread in self.threads:
            thread.start()
        return self.hub

    def __exit__(self, *exc: object) -> None:
        for server, thread in zip(self.servers, self.threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join()
