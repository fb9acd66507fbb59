"""Driving the app's page in headless Debian Chromium: the browser, and reading and clicking the
frame image exactly as Gradio maps it (shared by the browser tests)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# SwiftShader WebGL (software) for gr.Model3D's Babylon viewer; no GPU on the test box.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--ignore-gpu-blocklist",
]


def require_chromium() -> None:
    """Fail with the fix when Debian's Chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `apt-get install chromium` (`make test` does this)"
        )


def shots_folder(default: Path) -> Path:
    """Where screenshots go: ``$BODY4D_SHOTS`` when set, else ``default`` (created)."""
    folder = Path(os.environ.get("BODY4D_SHOTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def frame_src(pg: Page) -> str:
    """The ``src`` of the frame image ("" before there is one)."""
    img = pg.locator("#frame img")
    return (img.get_attribute("src") or "") if img.count() else ""


def aim_at_video_pixel(pg: Page, x: int, y: int) -> tuple[int, int, int, int]:
    """Where to click the frame to hit video pixel (x, y): ``(client_x, client_y, x', y')``.

    ``(x', y')`` is the pixel Gradio will report for that click.

    Gradio maps a click to ``round((clientX - left - offsetX) / r)`` with ``r`` the display
    scale of the centred image. Chromium sends integer client coordinates, so when the frame is
    shown smaller than its size (r < 1) some pixels cannot be hit exactly: aim at the nearest
    integer coordinate and compute what Gradio will make of it.
    """
    g = pg.locator("#frame img").evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return {l: r.left, t: r.top, w: r.width, h: r.height, nw: e.naturalWidth, nh: e.naturalHeight}; }"
    )
    r = min(g["w"] / g["nw"], g["h"] / g["nh"], 1.0)
    off_x, off_y = (g["w"] - g["nw"] * r) / 2, (g["h"] - g["nh"] * r) / 2

    def aim(origin: float, offset: float, pixel: int) -> tuple[int, int]:
        centre = origin + offset + pixel * r
        candidates = range(math.floor(centre) - 2, math.ceil(centre) + 3)
        reported = {c: math.floor((c - origin - offset) / r + 0.5) for c in candidates}  # JS Math.round
        best = min(candidates, key=lambda c: (abs(reported[c] - pixel), c))
        return best, reported[best]

    (cx, px), (cy, py) = aim(g["l"], off_x, x), aim(g["t"], off_y, y)
    return cx, cy, px, py


def displayed_pixels(pg: Page) -> np.ndarray:
    """The frame image the browser shows, RGB ``uint8[H, W, 3]``."""
    width, height, data = pg.locator("#frame img").evaluate(
        "img => { const c = document.createElement('canvas');"
        " c.width = img.naturalWidth; c.height = img.naturalHeight;"
        " const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);"
        " return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)]; }"
    )
    return np.asarray(data, dtype=np.uint8).reshape(height, width, 4)[..., :3]
