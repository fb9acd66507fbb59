"""The real app in a real browser: start `app.py` without checkpoints, drive Debian Chromium.

Uploads the street clip, scrubs to frame 400, clicks on a person, and checks what a user sees:
the status panel naming the missing checkpoints with the fix, the frame changing, the click
marker drawn at the clicked pixel, the targets list and the playable H.264 preview.
Screenshots go to the test's tmp folder (or ``BODY4D_SHOTS`` when set).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from body4d.video import encode_video
from tests.app_server import serve
from tests.browser_page import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    aim_at_video_pixel,
    displayed_pixels,
    frame_src,
    require_chromium,
    shots_folder,
)
from tests.conftest import run_folders

pytestmark = pytest.mark.browser

VTEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "vtest.avi"
UI_TIMEOUT_MS = 20_000
PREVIEW_TIMEOUT_MS = 90_000
VIEWPORT = {"width": 1400, "height": 1200}
CLICK_X, CLICK_Y = 286, 235  # the torso of the walker left of the lamp post on frame 400 (video px)
# A pixel this far right and down of a marker centre is in its fill, off its white "+" arms.
FILL_OFFSET = 3
JPEG_TOLERANCE = 40  # frames travel as JPEG: colours come back within this per channel
POSITIVE_FILL = (60, 200, 80)
# The tiny-model walker clip, and a pixel on the walker in frame 0.
CLIP_FRAMES, CLIP_H, CLIP_W = 10, 192, 256
WALKER_X, WALKER_Y = 120, 110
MARKER_CLEARANCE = 14  # pixels further than this from a click are free of its marker
MODEL_RUN_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The app with an empty checkpoint folder."""
    require_chromium()
    root = tmp_path_factory.mktemp("browser_app")
    (root / "ckpt").mkdir()
    with serve(root, root / "ckpt") as served:
        yield served


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The app on tiny real test checkpoints (random weights, CPU) and a small walker clip."""
    from body4d.testing.tiny_checkpoints import write_all

    require_chromium()
    root = tmp_path_factory.mktemp("browser_tiny_app")
    write_all(root / "ckpt")
    frames = []
    for t in range(CLIP_FRAMES):
        frame = np.full((CLIP_H, CLIP_W, 3), 170, np.uint8)
        frame[60:170, 100 + 3 * t : 150 + 3 * t] = (150, 40, 40)
        frames.append(frame)
    clip = encode_video(frames, root / "walker.mp4", Fraction(10))
    with serve(root, root / "ckpt") as served:
        yield {**served, "clip": clip}


@contextlib.contextmanager
def _browser_page(url: str) -> Iterator[object]:
    """A fresh headless Debian Chromium page on ``url``."""
    require_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            pg = context.new_page()
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.goto(url, wait_until="domcontentloaded")
            pg.locator("#upload").wait_for()
            yield pg
        finally:
            browser.close()


@pytest.fixture
def page(app: dict[str, object]):
    """A browser page on the app without checkpoints (closed after its test: one Playwright at a time)."""
    with _browser_page(str(app["url"])) as pg:
        yield pg


def _wait_src_change(pg, old: str) -> str:
    pg.wait_for_function(
        "old => { const i = document.querySelector('#frame img');"
        " return i && i.src && i.src !== old && i.complete && i.naturalWidth > 0; }",
        arg=old,
    )
    return frame_src(pg)


def _displayed_pixel(pg, x: int, y: int) -> list[int]:
    """RGB of pixel (x, y) of the frame image the browser shows."""
    return pg.locator("#frame img").evaluate(
        "(img, p) => { const c = document.createElement('canvas');"
        " c.width = img.naturalWidth; c.height = img.naturalHeight;"
        " const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);"
        " return Array.from(ctx.getImageData(p[0], p[1], 1, 1).data.slice(0, 3)); }",
        [x, y],
    )


def test_upload_scrub_click_without_checkpoints(app: dict[str, object], page, tmp_path: Path) -> None:
    pg = page
    shots = shots_folder(tmp_path)
    started = time.monotonic()

    # The status panel names the missing checkpoints and the exact fix; model buttons are off.
    models = pg.locator("#models").inner_text()
    for name in ("SAM-3 (facebook/sam3)", "SAM-3D-Body weights", "MHR body model"):
        assert name in models
    assert f"python scripts/setup.py --ckpt-root {app['ckpt']}" in models and "HF_TOKEN" in models
    mask_button = pg.locator("#mask_generation")
    assert mask_button.is_disabled() and "needs the SAM-3 checkpoint" in mask_button.inner_text()
    assert pg.locator("#generate_4d").is_disabled() and pg.locator("#auto_detect").is_disabled()

    # Upload the AVI: frame 0, slider range and time appear.
    pg.locator("#upload input[type=file]").set_input_files(str(VTEST))
    status = pg.locator("#status textarea")
    pg.wait_for_function(
        "() => document.querySelector('#status textarea')?.value.includes('795 frames at 10 fps')"
    )
    src0 = _wait_src_change(pg, "")
    assert pg.locator("#frame img").evaluate("e => [e.naturalWidth, e.naturalHeight]") == [768, 576]
    assert pg.locator("#time textarea").input_value() == "00:00.00 / 01:19.50"

    # Move the slider to frame 400: the picture and the time change.
    number = pg.locator("#frame_slider input[type=number]")
    number.fill("400")
    number.press("Enter")
    pg.wait_for_function("() => document.querySelector('#time textarea').value === '00:40.00 / 01:19.50'")
    src400 = _wait_src_change(pg, src0)

    # Click on a person: the click is recorded at that pixel and its marker is drawn there.
    cx, cy, px, py = aim_at_video_pixel(pg, CLICK_X, CLICK_Y)
    before = _displayed_pixel(pg, px + FILL_OFFSET, py + FILL_OFFSET)
    assert abs(px - CLICK_X) <= 1 and abs(py - CLICK_Y) <= 1, "frame shown at > 1 video px per screen px"
    pg.mouse.click(cx, cy)
    expected = f"positive click at (x={px}, y={py}) on frame 400"
    try:
        pg.wait_for_function(
            "s => document.querySelector('#status textarea').value.includes(s)", arg=expected
        )
    except PlaywrightTimeout:
        pytest.fail(f"status never said {expected!r}; it says {status.input_value()!r}")
    _wait_src_change(pg, src400)
    after = _displayed_pixel(pg, px + FILL_OFFSET, py + FILL_OFFSET)
    assert any(abs(a - b) > JPEG_TOLERANCE for a, b in zip(before, POSITIVE_FILL, strict=True)), before
    assert all(abs(a - b) <= JPEG_TOLERANCE for a, b in zip(after, POSITIVE_FILL, strict=True)), after
    assert "masks need the SAM-3 checkpoint" in status.input_value()
    assert "Target 1 · 1 click" in pg.locator("#targets").inner_text()
    pg.screenshot(path=str(shots / "app_after_click.png"), full_page=True)

    # The AVI gets a browser-playable H.264 preview.
    pg.wait_for_function(
        "() => { const v = document.querySelector('#preview_video video');"
        " return v && v.readyState >= 1 && v.videoWidth === 768 && !v.error; }",
        timeout=PREVIEW_TIMEOUT_MS,
    )
    previews = list(Path(str(app["out"])).glob("*/input_preview.mp4"))
    assert len(previews) == 1
    pg.screenshot(path=str(shots / "app_with_preview.png"), full_page=True)
    print(f"browser flow took {time.monotonic() - started:.1f} s; screenshots in {shots}")


def _wait_status(pg, text: str, timeout_ms: int = UI_TIMEOUT_MS) -> None:
    try:
        pg.wait_for_function(
            "s => document.querySelector('#status textarea').value.includes(s)", arg=text, timeout=timeout_ms
        )
    except PlaywrightTimeout:
        pytest.fail(f"status never said {text!r}; it says {pg.locator('#status textarea').input_value()!r}")


def test_click_masks_and_mask_generation_with_tiny_models(
    tiny_app: dict[str, object], tmp_path: Path
) -> None:
    shots = shots_folder(tmp_path)
    started = time.monotonic()
    with _browser_page(str(tiny_app["url"])) as pg:
        # Tiny checkpoints are flagged loudly; the model buttons are on.
        assert "TINY TEST CHECKPOINTS" in pg.locator("#models").inner_text()
        for button in ("#mask_generation", "#auto_detect", "#generate_4d", "#cancel"):
            assert pg.locator(button).is_enabled(), button

        pg.locator("#upload input[type=file]").set_input_files(str(tiny_app["clip"]))
        _wait_status(pg, f"{CLIP_FRAMES} frames at 10 fps")
        src0 = _wait_src_change(pg, "")
        before = displayed_pixels(pg).astype(int)

        # Click on the walker: SAM-3 answers with a mask painted over the frame.
        cx, cy, px, py = aim_at_video_pixel(pg, WALKER_X, WALKER_Y)
        pg.mouse.click(cx, cy)
        _wait_status(pg, "Mask of Target 1:")
        _wait_src_change(pg, src0)
        after = displayed_pixels(pg).astype(int)
        yy, xx = np.mgrid[:CLIP_H, :CLIP_W]
        away = (xx - px) ** 2 + (yy - py) ** 2 > MARKER_CLEARANCE**2
        changed = (np.abs(after - before).max(axis=2) > JPEG_TOLERANCE) & away
        assert changed.sum() > 100, f"only {changed.sum()} pixels away from the marker changed"
        pg.screenshot(path=str(shots / "tiny_after_click.png"), full_page=True)

        # Mask Generation: the Segmentation Result plays the mask video.
        pg.locator("#mask_generation").click()
        _wait_status(pg, "Mask Generation done", MODEL_RUN_TIMEOUT_MS)
        pg.wait_for_function(
            "w => { const v = document.querySelector('#mask_video video');"
            " return v && v.readyState >= 1 && v.videoWidth === w && !v.error; }",
            arg=CLIP_W,
        )
        runs = run_folders(Path(str(tiny_app["out"])))
        assert len(runs) == 1 and len(list((runs[0] / "masks").glob("*.png"))) == CLIP_FRAMES

        # 4D Generation: people and meshes in the status, the zip among the downloads.
        pg.locator("#generate_4d").click()
        _wait_status(pg, "4D Generation done", MODEL_RUN_TIMEOUT_MS)
        assert "1 person," in pg.locator("#status textarea").input_value()
        zip_name = f"body4d_{runs[0].name}.zip"
        try:
            pg.wait_for_function(
                "n => [...document.querySelectorAll('#downloads a')].some(a => a.href.endsWith(n))",
                arg=zip_name,
            )
        except PlaywrightTimeout:
            pytest.fail(
                f"no {zip_name} link; downloads show {pg.locator('#downloads').inner_html()[:2000]!r}"
            )
        # The 4D Result player plays the rendered video.
        pg.wait_for_function(
            "w => { const v = document.querySelector('#result_video video');"
            " return v && v.readyState >= 1 && v.videoWidth === w && !v.error; }",
            arg=CLIP_W,
        )
        # Each person alone: the chooser swaps the player's video.
        pg.locator("#result_choice").get_by_label("Person 1").check()
        pg.wait_for_function(
            "() => { const v = document.querySelector('#result_video video');"
            " return v && v.currentSrc.includes('4d_individual_1') && v.readyState >= 1; }"
        )
        pg.screenshot(path=str(shots / "tiny_after_4d.png"), full_page=True)
    print(f"tiny-model browser flow took {time.monotonic() - started:.1f} s; screenshots in {shots}")


def test_on_a_narrow_window_the_columns_stack_and_the_frame_stays_large(
    app: dict[str, object], tmp_path: Path
) -> None:
    """At 800 px the two columns stack, so the clickable frame takes the page width (it was 340 px)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            pg = browser.new_context(viewport={"width": 800, "height": 1000}).new_page()
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.goto(str(app["url"]), wait_until="domcontentloaded")
            pg.locator("#upload input[type=file]").set_input_files(str(VTEST))
            pg.wait_for_function(
                "() => { const i = document.querySelector('#frame img'); return i && i.complete && i.naturalWidth > 0; }"
            )
            width = pg.locator("#frame img").bounding_box()["width"]
            status_box = pg.locator("#status").bounding_box()
            frame_box = pg.locator("#frame").bounding_box()
            pg.screenshot(path=str(shots_folder(tmp_path) / "narrow_800px.png"), full_page=True)
        finally:
            browser.close()
    assert width >= 600, f"the frame is {width:.0f} px wide at an 800 px window"
    assert status_box["y"] > frame_box["y"] + frame_box["height"] - 1, (
        "the right column sits below the left one"
    )
