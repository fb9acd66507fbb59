"""Shared fixtures: the real street clip, synthetic videos/frame folders and a local file server."""

from __future__ import annotations

import functools
import http.server
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from body4d.video import encode_video

# Fixtures of the SAM-3D-Body port tests (tiny folders, Meta's reference as the oracle).
pytest_plugins = ["tests.conftest_sam3dbody"]

SHARED = Path(__file__).resolve().parents[2] / "shared"
VTEST = SHARED / "data" / "vtest.avi"


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test sees the shipped config only: no user config, no BODY4D_* overrides of the machine."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg_config"))
    for name in ("BODY4D_CONFIG", "BODY4D_CKPT_ROOT", "BODY4D_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class FileServer:
    """A local HTTP server (see `file_server`).

    Attributes:
        folder: the served folder; put files in it.
        url: its base URL, ``http://127.0.0.1:<port>``.
        requests: the paths asked for, in order.
    """

    folder: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """An HTTP server on 127.0.0.1 (any free port) serving ``tmp_path/served``, in a thread: downloads
    are tested without the internet."""
    folder = tmp_path / "served"
    folder.mkdir()
    server_info = FileServer(folder, "")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            server_info.requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            """Quiet: pytest output stays readable."""

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    server_info.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_info
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def vtest() -> Path:
    """The real multi-person street clip (795 frames, 10 fps, 768x576, MS-MPEG4 in AVI)."""
    assert VTEST.is_file(), f"{VTEST} is missing: the shared/ folder must sit beside the repository"
    return VTEST


def gradient_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    """Frames whose mean brightness encodes the frame index (index * 8), for order checks."""
    frames = []
    for i in range(n):
        f = np.full((height, width, 3), (i * 8) % 256, dtype=np.uint8)
        f[:, : max(1, width // 8), 1] = 255  # a green band on the left marks orientation
        frames.append(f)
    return frames


def two_people_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    """``n`` grey frames (at least 64x96) with two coloured "people": a red box moving right by
    2 px a frame and a still blue one, for the pipeline's end-to-end tests."""
    frames = []
    for t in range(n):
        f = np.full((height, width, 3), 128, np.uint8)
        f[10:40, 5 + 2 * t : 30 + 2 * t] = (220, 40, 40)
        f[30:60, 60:90] = (40, 80, 230)
        frames.append(f)
    return frames


def run_folders(output_dir: Path) -> list[Path]:
    """The run folders under ``output_dir``, sorted (not ``.locks`` or other hidden entries)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def tiny_cpu_args(ckpt_root: Path) -> list[str]:
    """``--set`` arguments of a body4d command on the tiny checkpoints at ``ckpt_root``, CPU, fp32."""
    return [
        "--set",
        f"paths.ckpt_root={ckpt_root}",
        "--set",
        "runtime.device=cpu",
        "--set",
        "runtime.dtype=fp32",
    ]


@pytest.fixture(scope="session")
def tiny_ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random checkpoints of every model in the real folder layout, written once per session."""
    from body4d.testing.tiny_checkpoints import write_all

    return write_all(tmp_path_factory.mktemp("tiny_ckpt"))


@pytest.fixture(scope="session")
def sam3_ckpt_root(tiny_ckpt_root: Path) -> Path:
    """The checkpoint root holding the tiny SAM-3 snapshot (``<root>/sam3``)."""
    return tiny_ckpt_root


@pytest.fixture(scope="session")
def sam3_section(sam3_ckpt_root: Path):
    """The default ``sam3`` config section pointing at the tiny checkpoint."""
    from body4d.config import load_config

    return load_config(overrides=[f"paths.ckpt_root={sam3_ckpt_root}"]).sam3


@pytest.fixture(scope="session")
def models(sam3_section):
    """The tiny SAM-3 tracker + detector loaded through the production adapter (CPU, fp32)."""
    import torch

    from models.sam3 import Sam3Models

    return Sam3Models.load(sam3_section, "cpu", torch.float32)


@pytest.fixture
def make_video(tmp_path: Path):
    """Write a synthetic H.264 mp4: ``make_video(n, h, w, fps) -> Path``."""

    def _make(
        n: int = 10, height: int = 64, width: int = 96, fps=Fraction(25), name: str = "clip.mp4"
    ) -> Path:
        return encode_video(gradient_frames(n, height, width), tmp_path / name, fps)

    return _make


def set_mp4_rotation(src: Path, dst: Path, clockwise_degrees: int) -> Path:
    """Copy an mp4 with its track matrix set to display the frames rotated clockwise (like phones do)."""
    data = bytearray(src.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    off = i + 8 + (20 if version == 0 else 32) + 16
    one, w = 0x10000, 0x40000000
    matrices = {
        90: (0, one, 0, -one, 0, 0, 0, 0, w),
        180: (-one, 0, 0, 0, -one, 0, 0, 0, w),
        270: (0, -one, 0, one, 0, 0, 0, 0, w),
    }
    data[off : off + 36] = struct.pack(">9i", *matrices[clockwise_degrees])
    dst.write_bytes(bytes(data))
    return dst


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many hostile inputs the fuzz suite (tests/test_fuzz.py) tried, and how many failed."""
    outcomes = {
        outcome: sum(
            "test_fuzz.py::" in r.nodeid for r in terminalreporter.stats.get(outcome, []) if r.when == "call"
        )
        for outcome in ("passed", "failed")
    }
    tried = outcomes["passed"] + outcomes["failed"]
    if tried:
        terminalreporter.write_line(f"fuzz suite: {tried} hostile cases tried, {outcomes['failed']} failed")
