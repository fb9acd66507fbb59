"""The real `app.py` as a subprocess on a free port, for the browser and API tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
APP_START_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(root: Path, ckpt: Path, args: Sequence[str] = ()) -> Iterator[dict[str, object]]:
    """`python app.py` on a free port with checkpoints from ``ckpt``; yields url, ckpt, out, log, proc.

    Args:
        root: folder for the app's outputs (``root/out``) and its log (``root/app.log``).
        ckpt: the checkpoint folder (``BODY4D_CKPT_ROOT``).
        args: more command-line arguments of `app.py` (``--set key=value``).

    Raises:
        pytest.fail: the app exited or did not answer within `APP_START_TIMEOUT_S` (with its log).
    """
    out = root / "out"
    port = free_port()
    env = dict(
        os.environ,
        BODY4D_HOST="127.0.0.1",
        BODY4D_PORT=str(port),
        BODY4D_CKPT_ROOT=str(ckpt),
        BODY4D_OUTPUT_DIR=str(out),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    env.pop("GRADIO_TEMP_DIR", None)
    log_path = root / "app.log"
    url = f"http://127.0.0.1:{port}/"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + APP_START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"app.py did not answer on {url} within {APP_START_TIMEOUT_S} s:\n{log_path.read_text()}"
                    )
                time.sleep(0.25)
            yield {"url": url, "ckpt": ckpt, "out": out, "log": log_path, "proc": proc}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
