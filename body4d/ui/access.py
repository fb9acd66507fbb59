"""Who may download which run: every browser and API client is an owner (a cookie), and the
app's file route serves a file of a run folder only to an owner whose session made or reopened
that run.

Gradio serves the run folders in place (``gr.set_static_paths``: no copy into its cache), and
its ``/gradio_api/file=<path>`` route would hand any of them to anyone who names the path. The
`OwnerGate` middleware in front of it gives each client a random owner cookie (a browser keeps
it; a `gradio_client.Client` keeps the one of its first request) and refuses, with a 403 and a
sentence, a path under ``runtime.output_dir`` outside the runs of the caller's sessions (``..``
resolved first). Gradio's own cache (uploads) keeps Gradio's rule: its paths are content hashes.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import gradio as gr

from body4d.session import SessionStore

log = logging.getLogger(__name__)

OWNER_COOKIE = "body4d_owner"
# An owner token: as unguessable as a Gradio session hash or more (bytes of randomness).
OWNER_TOKEN_BYTES = 24
# Gradio's route for files: ``<root>/gradio_api/file=<path>``.
FILE_ROUTE = "/file="
HTTP_FORBIDDEN = 403

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_owner(request: gr.Request) -> str | None:
    """The owner cookie of the request that called a handler (None without one)."""
    raw = getattr(request, "request", None)
    cookies = getattr(raw, "cookies", None) or {}
    return cookies.get(OWNER_COOKIE) or None


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value.decode("latin-1"))
            if OWNER_COOKIE in jar:
                return jar[OWNER_COOKIE].value or None
    return None


def refusal(
    path: Path, output_dir: Path, cache_dir: Path, store: SessionStore, owner: str | None
) -> str | None:
    """Why ``path`` may not be served to ``owner``, or None when it may.

    Args:
        path: the requested file, ``..`` and symlinks resolved.
        output_dir: ``runtime.output_dir``, resolved.
        cache_dir: Gradio's cache folder, resolved (Gradio's own rules apply there).
        store: the app's sessions (which runs each owner's sessions have).
        owner: the caller's owner cookie.
    """
    if not path.is_relative_to(output_dir) or path.is_relative_to(cache_dir) or path == output_dir:
        return None
    run_id = path.relative_to(output_dir).parts[0]
    if owner is not None and store.owns(owner, run_id):
        return None
    return (
        f"{path.name} is in run {run_id}, which is not one of this session's runs: a run's files are "
        "served only to the session that made or reopened it (open the run in that session)"
    )


class OwnerGate:
    """ASGI middleware: the owner cookie on every response, and the file route gated by run owner.

    Args:
        app: the Gradio app it wraps.
        store: the app's sessions.
        output_dir: ``runtime.output_dir``.
        cache_dir: Gradio's cache folder (``GRADIO_TEMP_DIR``).
    """

    def __init__(self, app: Asgi, store: SessionStore, output_dir: Path, cache_dir: Path) -> None:
        self.app = app
        self.store = store
        self.output_dir = Path(os.path.realpath(output_dir))
        self.cache_dir = Path(os.path.realpath(cache_dir))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owner = _cookie(scope)
        fresh = None if owner else secrets.token_urlsafe(OWNER_TOKEN_BYTES)
        route = scope.get("path", "")
        if FILE_ROUTE in route:
            # ASGI's path is percent-decoded already: the path Gradio serves, resolved.
            target = Path(os.path.realpath(route.split(FILE_ROUTE, 1)[1]))
            reason = refusal(target, self.output_dir, self.cache_dir, self.store, owner)
            if reason is not None:
                log.info("file refused (owner %s): %s", (owner or "none")[:6], reason)
                await self._forbidden(send, reason, fresh)
                return

        async def send_with_cookie(message: Message) -> None:
            if fresh is not None and message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", self._set_cookie(fresh))]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def _set_cookie(token: str) -> bytes:
        return f"{OWNER_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax".encode("latin-1")

    async def _forbidden(self, send: Send, reason: str, fresh: str | None) -> None:
        body = reason.encode("utf-8")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if fresh is not None:
            headers.append((b"set-cookie", self._set_cookie(fresh)))
        await send({"type": "http.response.start", "status": HTTP_FORBIDDEN, "headers": headers})
        await send({"type": "http.response.body", "body": body})
