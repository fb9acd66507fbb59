"""App handlers on the real street clip, without a browser: upload, preview, scrub, clicks, targets."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from body4d.checkpoints import checkpoint_report
from body4d.config import Config, ConfigError, load_config
from body4d.errors import InputError
from body4d.masks import draw_clicks
from body4d.run_dir import RunDir
from body4d.session import Session, SessionStore
from body4d.types import Click
from body4d.ui.display import format_fps, format_time, show_frame
from body4d.ui.downloads import run_files
from body4d.ui.events import UiEvents
from body4d.ui.examples import example_thumbnails, find_examples
from body4d.ui.layout import Widgets, build_layout
from body4d.ui.loading import LoadResult, load_video, make_preview
from body4d.ui.prompts import (
    ClickRequest,
    add_click,
    add_target,
    clear_targets,
    remove_target,
    select_target,
    target_choices,
)
from body4d.ui.status import Capabilities, capabilities, layout_spec, models_markdown
from body4d.video import VideoError, open_video, probe
from models.sam3 import SNAPSHOT_FILES
from tests.test_examples import entry, examples_config

VTEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "vtest.avi"
VTEST_FRAMES = 795
VTEST_FPS = Fraction(10)
VTEST_W, VTEST_H = 768, 576
# draw_clicks fill colours (RGB) of positive and negative markers.
POSITIVE_FILL = (60, 200, 80)
NEGATIVE_FILL = (220, 60, 60)
# A pixel this far right and down of a marker centre is in its fill, off its white "+"/"-" arms.
FILL_OFFSET = 3


def marker_colour(image: np.ndarray, x: int, y: int) -> tuple[int, ...]:
    """RGB of the fill of a click marker centred on (x, y)."""
    return tuple(int(v) for v in image[y + FILL_OFFSET, x + FILL_OFFSET])


def make_cfg(tmp: Path) -> Config:
    """Config with an empty checkpoint folder and a private output folder."""
    (tmp / "ckpt").mkdir(exist_ok=True)
    return load_config(
        overrides={"paths.ckpt_root": str(tmp / "ckpt"), "runtime.output_dir": str(tmp / "out")}, env={}
    )


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_cfg(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def loaded(cfg: Config) -> tuple[Session, LoadResult]:
    """One session with vtest.avi loaded (shared by the read-only tests of this module)."""
    assert VTEST.is_file(), f"{VTEST} is missing: the shared/ folder must sit beside the repository"
    session = Session(session_id="vtest")
    return session, load_video(cfg, session, VTEST)


@pytest.fixture
def fresh(cfg: Config) -> Session:
    """A session with vtest.avi loaded, for tests that change prompts."""
    session = Session(session_id="fresh")
    load_video(cfg, session, VTEST)
    return session


@pytest.fixture(scope="module")
def caps_report(cfg: Config) -> tuple[Capabilities, object]:
    report = checkpoint_report(cfg)
    return capabilities(cfg, report), report


def bind_events(
    cfg: Config, store: SessionStore, report, caps: Capabilities, models=None, examples=(), platform=None
) -> tuple[UiEvents, Widgets]:
    """UiEvents bound to a real page layout (the handlers answer with {widget: update})."""
    events = UiEvents(cfg, store, report, caps, list(examples), models, platform)
    demo, widgets = build_layout(layout_spec(report, caps, []))
    events.bind(demo, widgets)
    return events, widgets


def vtest_frame(index: int) -> np.ndarray:
    with open_video(VTEST) as video:
        return video.frame(index)


def test_upload_vtest_creates_session_with_795_frames_at_10_fps(cfg: Config, loaded) -> None:
    session, result = loaded
    assert result.info.n_frames == VTEST_FRAMES and result.info.fps == VTEST_FPS
    assert (result.info.width, result.info.height) == (VTEST_W, VTEST_H)
    assert session.info == result.info and session.video_path == VTEST
    assert session.current_frame == 0 and session.targets == {1: []} and session.current_target == 1
    assert result.needs_transcode, "MS-MPEG4 in AVI cannot play in browsers"
    run_root = Path(cfg.runtime.output_dir) / result.run_id
    assert session.run is not None and session.run.root == run_root and (run_root / "manifest.json").is_file()
    assert session.run.manifest["video"]["n_frames"] == VTEST_FRAMES
    assert result.view.index == 0 and result.view.time == "00:00.00 / 01:19.50"
    assert np.array_equal(result.view.image, vtest_frame(0))
    assert "795 frames at 10 fps" in result.message and "768×576" in result.message
    # The disk use a run would take (body4d.disk_use), before anything is clicked.
    assert "Estimated disk use for one person: " in result.message and "meshes " in result.message
    assert "each more person adds " in result.message and "Warning" not in result.message


def test_upload_warns_when_the_output_disk_has_less_room_than_the_estimate(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import body4d.disk_use

    monkeypatch.setattr(body4d.disk_use, "free_bytes", lambda _folder: 5_000_000)
    message = load_video(cfg, Session(session_id="full"), VTEST).message
    assert "Warning: not enough free disk space in " in message and "5.0 MB free" in message
    assert "export.obj (" in message, "names the key that saves the most"


def test_preview_of_avi_is_h264_mp4_in_the_run_folder(cfg: Config, loaded) -> None:
    session, result = loaded
    calls: list[tuple[int, int]] = []
    preview = make_preview(session, on_progress=lambda done, total: calls.append((done, total)))
    assert preview is not None and preview == session.run.root / RunDir.PREVIEW
    info = probe(preview)
    assert info.codec == "h264" and info.n_frames == VTEST_FRAMES and info.fps == VTEST_FPS
    assert (info.width, info.height) == (VTEST_W, VTEST_H)
    assert session.preview_path == preview
    assert RunDir.PREVIEW in session.run.manifest["artefacts"]["preview"]
    assert calls[0] == (0, VTEST_FRAMES) and calls[-1] == (VTEST_FRAMES - 1, VTEST_FRAMES)


def test_preview_of_h264_mp4_is_the_file_itself(cfg: Config, make_video) -> None:
    clip = make_video(n=4, height=64, width=96, fps=Fraction(25))
    session = Session(session_id="mp4")
    assert not load_video(cfg, session, clip).needs_transcode
    assert make_preview(session) == clip


def test_scrub_to_frame_400_returns_that_frame_and_time(loaded) -> None:
    session, _ = loaded
    view = show_frame(session, 400)
    assert view.index == 400 and session.current_frame == 400
    assert view.time == "00:40.00 / 01:19.50"
    expected = vtest_frame(400)
    assert np.array_equal(view.image, expected)
    assert not np.array_equal(view.image, vtest_frame(0))
    assert show_frame(session, 10_000).index == VTEST_FRAMES - 1, "out-of-range index is clamped"


def test_clicks_are_recorded_in_video_pixels_and_drawn(fresh: Session, caps_report) -> None:
    caps, report = caps_report
    show_frame(fresh, 400)
    pos = add_click(fresh, ClickRequest(100, 200, positive=True), caps, report)
    neg = add_click(fresh, ClickRequest(500, 300, positive=False), caps, report)
    assert fresh.targets[1] == [Click(400, 100.0, 200.0, True), Click(400, 500.0, 300.0, False)]
    assert marker_colour(pos.view.image, 100, 200) == POSITIVE_FILL == marker_colour(neg.view.image, 100, 200)
    assert marker_colour(neg.view.image, 500, 300) == NEGATIVE_FILL
    assert np.array_equal(neg.view.image, draw_clicks(vtest_frame(400), fresh.targets[1]))
    assert "positive click at (x=100, y=200) on frame 400" in pos.message
    assert (
        "masks need the SAM-3 checkpoint" in pos.message
        and "python scripts/setup.py --ckpt-root" in pos.message
    )
    # markers belong to their frame: none on frame 10, both again on frame 400
    assert np.array_equal(show_frame(fresh, 10).image, vtest_frame(10))
    assert marker_colour(show_frame(fresh, 400).image, 500, 300) == NEGATIVE_FILL
    assert fresh.prompts().obj_ids == [1]


def test_click_on_downscaled_frame_maps_back_to_video_pixels(cfg: Config, make_video, caps_report) -> None:
    caps, report = caps_report
    clip = make_video(n=2, height=720, width=2560, fps=Fraction(30), name="wide.mp4")
    session = Session(session_id="wide")
    view = load_video(cfg, session, clip).view
    assert view.scale == pytest.approx(0.5) and view.image.shape == (360, 1280, 3)
    add_click(session, ClickRequest(0, 0, positive=True), caps, report)
    add_click(session, ClickRequest(1279, 359, positive=True), caps, report)
    add_click(session, ClickRequest(100, 50, positive=False), caps, report)
    last = add_click(session, ClickRequest(5000, -3, positive=True), caps, report)
    assert session.targets[1] == [
        Click(0, 0.0, 0.0, True),
        Click(0, 2558.0, 718.0, True),
        Click(0, 200.0, 100.0, False),
        Click(0, 2559.0, 0.0, True),
    ], "display pixels / 0.5, clamped inside the video"
    # The markers are drawn on the 1280x360 display where the clicks were made (scaled once,
    # not twice): the fill 2 px down-right of the corner click, 2 px up-left of the others, off
    # the white arms.
    image = last.view.image
    assert image.shape == (360, 1280, 3)
    assert tuple(int(v) for v in image[357, 1277]) == POSITIVE_FILL
    assert tuple(int(v) for v in image[48, 98]) == NEGATIVE_FILL
    assert tuple(int(v) for v in image[2, 2]) == POSITIVE_FILL
    assert np.array_equal(image[100:250, 300:1000], view.image[100:250, 300:1000]), "no marker in between"


def test_masks_of_a_downscaled_frame_are_drawn_at_display_size(cfg: Config, make_video) -> None:
    from body4d.masks import overlay

    clip = make_video(n=2, height=720, width=2560, fps=Fraction(30), name="wide.mp4")
    session = Session(session_id="wide")
    plain = load_video(cfg, session, clip).view.image
    left = np.zeros((720, 2560), dtype=bool)
    left[:, :1280] = True  # the left half of the video = the left 640 display columns
    session.masks[0] = {1: left}
    image = show_frame(session, 0).image
    assert image.shape == plain.shape == (360, 1280, 3)
    labels = np.zeros((360, 1280), dtype=np.uint8)
    labels[:, :640] = 1
    assert np.array_equal(image, overlay(plain, labels)), "the display frame with the display-size label map"
    assert np.array_equal(image[:, 640:], plain[:, 640:])
    assert not np.array_equal(image[:, :638], plain[:, :638])


def test_targets_add_remove_clear_keep_their_ids(fresh: Session, caps_report) -> None:
    caps, report = caps_report
    with pytest.raises(InputError, match="Target 1 has no clicks yet"):
        add_target(fresh)
    for expected_id in (1, 2, 3):
        assert fresh.current_target == expected_id
        add_click(fresh, ClickRequest(10 * expected_id, 20, positive=True), caps, report)
        if expected_id < 3:
            assert "Added Target" in add_target(fresh)
    assert [tid for _, tid in target_choices(fresh)] == [1, 2, 3]
    select_target(fresh, 2)
    assert "Removed Target 2" in remove_target(fresh)
    assert list(fresh.targets) == [1, 3] and fresh.current_target == 3
    add_target(fresh)
    assert fresh.current_target == 4, "ids are never reused or renumbered"
    assert target_choices(fresh) == [
        ("Target 1 · 1 click", 1),
        ("Target 3 · 1 click", 3),
        ("Target 4 · 0 clicks", 4),
    ]
    assert fresh.prompts().obj_ids == [1, 3]
    with pytest.raises(InputError, match="no target 2"):
        select_target(fresh, 2)
    clear_targets(fresh)
    assert fresh.targets == {1: []} and fresh.current_target == 1 and fresh.next_id == 2
    assert fresh.prompts().obj_ids == []
    # Removing the only target starts over at Target 1 (not "Target 2", ids skipping on).
    add_click(fresh, ClickRequest(10, 20, positive=True), caps, report)
    remove_target(fresh)
    assert fresh.targets == {1: []} and fresh.current_target == 1 and fresh.next_id == 2


def test_bad_uploads_become_the_status_and_keep_the_loaded_video(cfg: Config, tmp_path: Path) -> None:
    store = SessionStore()
    report = checkpoint_report(cfg)
    events, w = bind_events(cfg, store, report, capabilities(cfg, report))
    request = gr.Request(session_hash="bad")
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(VideoError):
        load_video(cfg, Session(session_id="x"), fake)
    with pytest.warns(
        UserWarning, match="holiday.mp4 cannot be read"
    ):  # the toast (a warning outside a request)
        out = events.upload(str(fake), request)
    assert set(out) == {w.status, w.upload}, "only the status and the refused file change"
    message = out[w.status]
    assert "holiday.mp4 cannot be read as a video" in message and "re-export it as H.264 mp4" in message
    assert str(tmp_path) not in message, "the user sees the file name, not the server path"
    assert out[w.upload] is None, "the refused file is taken off the upload widget"
    assert not store.get("bad").has_video
    assert events.preview(request) == {w.status: gr.skip()}, (
        "no video: the preview step says nothing over the error"
    )
    # With a video loaded, a bad upload leaves it loaded and clickable.
    events.upload(str(VTEST), request)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.warns(UserWarning):
        out = events.upload(str(notes), request)
    assert (
        "notes.txt is not a video this app reads" in out[w.status]
        and "(vtest.avi is still loaded.)" in out[w.status]
    )
    session = store.get("bad")
    assert session.has_video and session.video_path == VTEST
    session.preview_path = VTEST  # as after its preview step
    assert events.preview(request) == {w.status: gr.skip()}, (
        "after a refused upload the preview step leaves the status alone"
    )
    select = gr.SelectData(target=None, data={"index": [120, 240], "value": None})
    clicked = events.click("Positive", select, request)
    assert session.targets[1] == [Click(0, 120.0, 240.0, True)] and w.frame in clicked


def test_removing_the_upload_unloads_the_video(cfg: Config) -> None:
    store = SessionStore()
    report = checkpoint_report(cfg)
    events, w = bind_events(cfg, store, report, capabilities(cfg, report))
    request = gr.Request(session_hash="x-button")
    events.upload(str(VTEST), request)
    run_id = store.get("x-button").run.run_id
    out = events.remove_upload(request)
    session = store.get("x-button")
    assert not session.has_video and session.run is None and session.targets == {1: []}
    assert out[w.frame] is None and out[w.preview_video] is None and "vtest.avi removed" in out[w.status]
    assert out[w.slider].interactive is False
    assert session.runs == [run_id], "the run folder stays listed for this session"


def test_too_long_video_is_refused_with_the_config_key(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path).replace(**{"app.max_video_seconds": 30})
    with pytest.raises(VideoError, match=r"lasts 79.5 s, longer than the 30 s .*app.max_video_seconds"):
        load_video(cfg, Session(session_id="long"), VTEST)


def test_ui_events_drive_one_session_per_browser(cfg: Config) -> None:
    store = SessionStore()
    report = checkpoint_report(cfg)
    events, w = bind_events(cfg, store, report, capabilities(cfg, report))
    alice, bob = gr.Request(session_hash="alice"), gr.Request(session_hash="bob")
    out = events.upload(str(VTEST), alice)
    image, slider, time = out[w.frame], out[w.slider], out[w.time]
    assert (
        image.shape == (VTEST_H, VTEST_W, 3)
        and slider.maximum == VTEST_FRAMES - 1
        and time.startswith("00:00.00")
    )
    assert "795 frames" in out[w.status]
    assert out[w.mask_video] is None and out[w.result_video] is None and out[w.downloads] is None
    assert out[w.result_choice]["visible"] is False and out[w.result_choice]["choices"] == []
    assert out[w.viewer3d] is None
    scrubbed = events.scrub(400, alice)
    assert scrubbed[w.time] == "00:40.00 / 01:19.50" and np.array_equal(scrubbed[w.frame], vtest_frame(400))
    select = gr.SelectData(target=None, data={"index": [120, 240], "value": None})
    clicked = events.click("Negative", select, alice)
    assert store.get("alice").targets[1] == [Click(400, 120.0, 240.0, False)]
    assert (
        marker_colour(clicked[w.frame], 120, 240) == NEGATIVE_FILL and "negative click" in clicked[w.status]
    )
    assert not store.get("bob").has_video and events.scrub(3, bob) == {w.frame: gr.skip()}
    with pytest.warns(UserWarning):
        refused = events.click("Positive", select, bob)
    assert set(refused) == {w.status} and "no video loaded" in refused[w.status]


def test_a_reload_finds_the_session_by_its_browser_key(cfg: Config) -> None:
    store = SessionStore()
    report = checkpoint_report(cfg)
    events, w = bind_events(cfg, store, report, capabilities(cfg, report))
    first = gr.Request(session_hash="load-1")
    out = events.restore(None, first)
    key = out[w.browser_key]
    assert isinstance(key, str) and len(key) == 32 and w.frame not in out, "a new browser: nothing to restore"
    events.upload(str(VTEST), first)
    events.scrub(120, first)
    events.click("Positive", gr.SelectData(target=None, data={"index": [50, 60], "value": None}), first)
    run_id = store.get(key).run.run_id
    events.unload(first)  # the reload closes the old page...
    second = gr.Request(session_hash="load-2")
    out = events.restore(key, second)  # ...and the new page load brings the key from local storage
    assert out[w.browser_key] == key and "Welcome back: vtest.avi is still loaded" in out[w.status]
    assert out[w.slider].value == 120 and out[w.targets].value == 1
    assert np.array_equal(out[w.frame][:40], vtest_frame(120)[:40]), "the same frame (clicks drawn lower)"
    assert store.get("load-2").run.run_id == run_id and store.get("load-2").targets[1][0].frame == 120
    # An upload handled before the page-load event: that session becomes the browser's.
    early = gr.Request(session_hash="early-upload")
    events.upload(str(VTEST), early)
    out = events.restore(None, early)
    assert out[w.browser_key] == "early-upload" and "Welcome back: vtest.avi" in out[w.status]
    assert store.get("early-upload").has_video
    # A forged or missing key gets a fresh session.
    other = events.restore("../../etc/passwd", gr.Request(session_hash="load-3"))
    assert other[w.browser_key] != key and not store.get("load-3").has_video


def test_status_lists_missing_checkpoints_with_the_setup_command(cfg: Config) -> None:
    report = checkpoint_report(cfg)
    assert not report.ok
    text = models_markdown(report)
    for name in ("SAM-3 (facebook/sam3)", "SAM-3D-Body weights", "MHR body model", "MoGe-2 ViT-L normal"):
        assert name in text
    assert f"python scripts/setup.py --ckpt-root {cfg.paths.ckpt_root}" in text
    assert "HF_TOKEN" in text and "gated" in text
    caps = capabilities(cfg, report)
    assert caps.segment == "needs the SAM-3 checkpoint"
    assert caps.reconstruct == "needs the SAM-3 and SAM-3D-Body checkpoints"
    spec = layout_spec(report, caps, [])
    for button in (spec.auto_detect, spec.mask_generation, spec.generate_4d, spec.cancel):
        assert not button.interactive
    assert spec.mask_generation.label == "Mask Generation (needs the SAM-3 checkpoint)"


def test_capabilities_when_checkpoints_exist_but_models_are_not_loaded(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    for path in (
        *(f"{cfg.sam3.ckpt_path}/{name}" for name in SNAPSHOT_FILES),
        cfg.sam_3d_body.ckpt_path,
        cfg.sam_3d_body.config_path,
        cfg.sam_3d_body.mhr_path,
        cfg.camera.ckpt_path,
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"x")
    report = checkpoint_report(cfg)
    assert report.ok and "all checkpoints present" in models_markdown(report)
    assert capabilities(cfg, report).segment == "SAM-3 is not loaded"
    assert capabilities(cfg, report, segmenter_loaded=True, reconstructor_loaded=True) == Capabilities(
        None, None
    )
    failed = capabilities(cfg, report, load_error="Sam3CheckpointError: bad weights")
    assert failed.segment == failed.reconstruct == "the models failed to load: see the models panel"
    text = models_markdown(report, "Sam3CheckpointError: bad weights")
    assert "Models failed to load:** Sam3CheckpointError: bad weights" in text
    assert f"python scripts/setup.py --ckpt-root {cfg.paths.ckpt_root}" in text


def test_time_labels_use_the_exact_frame_rate() -> None:
    ntsc = Fraction(30000, 1001)
    assert format_time(Fraction(1) / ntsc) == "00:00.03"
    assert format_time(Fraction(1799) / ntsc) == "01:00.02"
    assert format_time(Fraction(3725)) == "62:05.00"
    assert format_fps(ntsc) == "29.97" and format_fps(Fraction(10)) == "10"


def test_examples_list_gives_the_gallery_and_loads_a_picked_one(
    cfg: Config, make_video, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "examples"
    folder.mkdir()
    walk = make_video(n=3, height=480, width=800, name="walk.mp4").read_bytes()
    (folder / "walk.mp4").write_bytes(walk)
    (folder / "broken.mkv").write_text("nope")
    (folder / "unlisted.mp4").write_bytes(walk)
    listed = examples_config(
        tmp_path,
        [
            entry("broken.mkv", b"nope"),
            entry("walk.mp4", walk, caption="A walk"),
            entry("downloads/far.mp4", b"far", "https://example.org/far.mp4"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="body4d.ui.examples"):
        items, hint = find_examples(listed)
    assert items == [(folder / "broken.mkv", "Broken"), (folder / "walk.mp4", "A walk")]
    assert hint == "run `python scripts/setup.py --examples` to fetch 1 more example"
    assert (
        "downloads/far.mp4 not downloaded yet: run `python scripts/setup.py --examples` to fetch 1 more"
        in (caplog.text)
    )
    usable, thumbs = example_thumbnails(items)
    assert (
        usable == [folder / "walk.mp4"] and thumbs[0][1] == "A walk" and thumbs[0][0].shape == (192, 320, 3)
    )
    broken_list = listed.replace(**{"app.examples_list": str(tmp_path / "none.yaml")})
    assert find_examples(broken_list) == ([], "")
    spec = layout_spec(
        checkpoint_report(cfg), capabilities(cfg, checkpoint_report(cfg)), thumbs, examples_hint=hint
    )
    demo, widgets = build_layout(spec)
    shown = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "examples_hint"]
    assert shown and "setup.py --examples" in shown[0].value, "the page says how to fetch the rest"
    report = checkpoint_report(cfg)
    events, w = bind_events(cfg, SessionStore(), report, capabilities(cfg, report), examples=usable)
    out = events.pick_example(
        gr.SelectData(target=None, data={"index": 0, "value": None}), gr.Request(session_hash="ex")
    )
    assert out[w.slider].maximum == 2 and "Loaded walk.mp4: 3 frames" in out[w.status]


def test_session_store_evicts_idle_and_surplus_sessions() -> None:
    now = [0.0]
    store = SessionStore(idle_seconds=100, max_sessions=2, clock=lambda: now[0])
    a = store.get("a")
    assert store.get("a") is a
    now[0] = 50
    store.get("b")
    now[0] = 120  # a idle for 120 s > 100, b for 70 s
    store.get("c")
    assert "a" not in store and "b" in store and "c" in store
    store.get("d")  # over capacity: least recently used (b) goes
    assert "b" not in store and len(store) == 2
    now[0] = 1000
    store.get("e")  # every other session idle for 900 s or more: all go
    assert len(store) == 1 and "e" in store
    with pytest.raises(ValueError, match="session id is required"):
        store.get("")


def test_app_host_and_port_come_from_env_then_set_overrides() -> None:
    import app

    cfg = app.app_config(app.parse_args([]), {"BODY4D_HOST": "0.0.0.0", "BODY4D_PORT": "7999"})
    assert (cfg.app.host, cfg.app.port) == ("0.0.0.0", 7999)
    cfg = app.app_config(app.parse_args(["--set", "app.port=8123"]), {"BODY4D_PORT": "7999"})
    assert (cfg.app.host, cfg.app.port) == ("127.0.0.1", 8123)
    with pytest.raises(ConfigError, match="app.port"):
        app.app_config(app.parse_args([]), {"BODY4D_PORT": "seventy"})


# --------------------------------------------------------------------------- with the tiny real models

CLIP_T, CLIP_H, CLIP_W = 8, 96, 128
CLIP_FPS = Fraction(10)
PERSON_BOX = (40, 16, 72, 88)  # x0, y0, x1, y1 of the moving "person" on frame 0
PERSON_X, PERSON_Y = 56, 50  # a pixel on that person
FAR_FROM_MARKER = 12  # pixels further than this from a click are free of its marker


def person_frames() -> list[np.ndarray]:
    """A grey street with one dark-red 'person' walking right by 2 px per frame."""
    frames = []
    for t in range(CLIP_T):
        frame = np.full((CLIP_H, CLIP_W, 3), 170, np.uint8)
        x0, y0, x1, y1 = PERSON_BOX
        frame[y0:y1, x0 + 2 * t : x1 + 2 * t] = (150, 40, 40)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """Tiny real checkpoints, a CPU config on them, the models loaded through the app's loader."""
    import app
    from body4d.testing.tiny_checkpoints import write_all

    root = tmp_path_factory.mktemp("tiny_app")
    write_all(root / "ckpt")
    cfg = load_config(
        overrides={
            "paths.ckpt_root": str(root / "ckpt"),
            "runtime.output_dir": str(root / "out"),
            "runtime.device": "cpu",
        },
        env={},
    )
    report = checkpoint_report(cfg)
    models, error = app.load_app_models(cfg, report)
    assert error is None and models is not None and models.sam3 is not None and models.body is not None
    caps = capabilities(cfg, report, segmenter_loaded=True, reconstructor_loaded=True)
    return cfg, report, caps, models


@pytest.fixture(scope="module")
def person_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from body4d.video import encode_video

    return encode_video(person_frames(), tmp_path_factory.mktemp("clip") / "walker.mp4", CLIP_FPS)


@pytest.fixture
def model_events(tiny, person_clip: Path):
    """UiEvents with the tiny models and one browser session that uploaded the walker clip."""
    cfg, report, caps, models = tiny
    store = SessionStore()
    events, widgets = bind_events(cfg, store, report, caps, models)
    request = gr.Request(session_hash="walker")
    events.upload(str(person_clip), request)
    return events, store.get("walker"), request, widgets


class FakeProgress:
    """Stands in for gr.Progress: records ``(fraction, desc)`` and may run a hook on each call."""

    def __init__(self, hook=None) -> None:
        self.calls: list[tuple[float, str]] = []
        self.hook = hook

    def __call__(self, fraction: float, desc: str = "") -> None:
        self.calls.append((fraction, desc))
        if self.hook is not None:
            self.hook(fraction, desc)


def select(x: int, y: int) -> gr.SelectData:
    return gr.SelectData(target=None, data={"index": [x, y], "value": None})


def far_from(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """Boolean mask of the pixels further than `FAR_FROM_MARKER` from (x, y)."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 > FAR_FROM_MARKER**2


def test_tiny_checkpoints_are_flagged_loudly_and_enable_the_model_buttons(tiny) -> None:
    cfg, report, caps, _ = tiny
    assert report.ok and report.uses_tiny and caps == Capabilities(None, None)
    spec = layout_spec(report, caps, [])
    assert spec.models_markdown.startswith("## ⚠️ TINY TEST CHECKPOINTS — RESULTS ARE MEANINGLESS")
    assert "loaded: clicks show live masks" in spec.models_markdown
    for button in (spec.auto_detect, spec.mask_generation, spec.generate_4d, spec.cancel):
        assert button.interactive
    assert spec.mask_generation.label == "Mask Generation"


def test_broken_checkpoint_leaves_the_app_usable_with_the_reason(tmp_path: Path) -> None:
    import app
    from body4d.testing.tiny_checkpoints import write_all

    write_all(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "sam3" / "config.json").write_text('{"model_type": "bert"}')
    cfg = load_config(overrides={"paths.ckpt_root": str(tmp_path / "ckpt"), "runtime.device": "cpu"}, env={})
    report = checkpoint_report(cfg)
    models, error = app.load_app_models(cfg, report)
    assert models is None and error is not None
    assert error.startswith("CheckpointError:") and "not a facebook/sam3 snapshot" in error
    caps = capabilities(cfg, report, load_error=error)
    spec = layout_spec(report, caps, [], error)
    assert not spec.mask_generation.interactive and not spec.cancel.interactive
    assert f"Models failed to load:** {error}" in spec.models_markdown
    (tmp_path / "other").mkdir()
    empty = make_cfg(tmp_path / "other")  # its own empty checkpoint folder
    assert app.load_app_models(empty, checkpoint_report(empty)) == (None, None), "missing: nothing is tried"


def test_click_shows_live_masks_of_every_target_and_edits_the_tracker(model_events) -> None:
    from body4d.masks import masks_to_labels, overlay

    events, session, request, w = model_events
    plain = session.frame(0).copy()  # as decoded (H.264 is lossy)
    out = events.click("Positive", select(PERSON_X, PERSON_Y), request)
    image, message = out[w.frame], out[w.status]
    tracker = session.tracker
    assert tracker is not None and tracker.obj_ids == [1]
    mask = session.masks[0][1]
    assert mask.shape == (CLIP_H, CLIP_W) and mask.any()
    # the frame shows target 1's mask (overlay paints each id in color_for(id)) plus the marker
    away = far_from(image, PERSON_X, PERSON_Y)
    assert not np.array_equal(image[away], plain[away]), "the mask overlay changes the frame"
    expected = draw_clicks(overlay(plain, masks_to_labels({1: mask}, mask.shape)), session.targets[1])
    assert np.array_equal(image, expected)
    assert "Mask of Target 1:" in message and "% of the frame" in message

    events.add_target(request)
    events.click("Positive", select(20, 20), request)
    assert tracker.obj_ids == [1, 2] and set(session.masks[0]) == {1, 2}
    out = events.remove_target(request)
    assert tracker.obj_ids == [1] and set(session.masks[0]) == {1} and "Removed Target 2" in out[w.status]
    assert np.array_equal(out[w.frame], image), "back to target 1 alone"
    out = events.clear_targets(request)
    assert tracker.obj_ids == [] and session.masks == {} and np.array_equal(out[w.frame], plain)


def test_a_click_does_not_decode_the_frame_on_screen_again_for_sam3(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)  # opens the tracker on frame 0
    events.scrub(CLIP_T - 1, request)
    decoded = session.video().frames_decoded
    out = events.click("Positive", select(PERSON_X, PERSON_Y), request)
    assert session.video().frames_decoded == decoded, "SAM-3 read the frame the scrub decoded"
    assert set(session.masks) == {0, CLIP_T - 1} and w.frame in out
    source = session.frame_source()
    assert len(source) == CLIP_T and source.frame(CLIP_T - 1) is session.frame(CLIP_T - 1)
    assert np.array_equal(source.frame(2), session.video().frame(2))
    decoded = session.video().frames_decoded
    session.frame(CLIP_T - 1)
    assert session.video().frames_decoded == decoded, "another frame read for SAM-3 keeps the one on screen"


def test_negative_only_first_click_is_refused_and_not_recorded(model_events) -> None:
    events, session, request, w = model_events
    with pytest.warns(UserWarning):
        out = events.click("Negative", select(PERSON_X, PERSON_Y), request)
    assert set(out) == {w.status}, "the frame and targets keep their values"
    assert "object 1 has only negative clicks: add a positive click on the person first" in out[w.status]
    assert session.targets == {1: []} and session.masks == {}
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    events.click("Negative", select(100, 80), request)  # a negative refinement is fine now
    assert [c.positive for c in session.targets[1]] == [True, False]


def test_mask_then_4d_generation_fill_the_run_folder_and_offer_the_zip(model_events) -> None:
    import json
    import zipfile

    events, session, request, w = model_events
    with pytest.warns(UserWarning):
        out = events.mask_generation(request, FakeProgress())
    assert set(out) == {w.status} and "no targets yet: click on a person" in out[w.status]
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    progress = FakeProgress()
    out = events.mask_generation(request, progress)
    video, status = out[w.mask_video], out[w.status]
    run = session.run
    assert video == str(run.root / f"video_mask_{run.run_id}.mp4") and probe(Path(video)).n_frames == CLIP_T
    assert len(list((run.root / "masks").glob("*.png"))) == CLIP_T
    assert "Mask Generation done" in status and "target(s) 1 tracked over 8 frames" in status
    assert progress.calls and progress.calls[-1][1].startswith("masks:") and progress.calls[-1][0] <= 1.0
    # Writing masks and the mask video has its own labelled half of the bar (no silent 100 %).
    saving = [f for f, desc in progress.calls if desc.startswith("masks: saving frame")]
    tracking = [f for f, desc in progress.calls if not desc.startswith("masks: saving frame")]
    assert len(saving) == CLIP_T and saving == sorted(saving) and saving[0] > 0.5 and saving[-1] == 1.0
    assert max(tracking) <= 0.5
    masks_started = run.manifest["stages"]["masks"]["started"]

    progress = FakeProgress()
    out = events.generate_4d(request, progress)
    result_video, choice, viewer, downloads = (
        out[w.result_video],
        out[w.result_choice],
        out[w.viewer3d],
        out[w.downloads],
    )
    manifest = run.manifest
    assert (
        result_video == str(run.root / f"4d_{run.run_id}.mp4")
        and probe(Path(result_video)).n_frames == CLIP_T
    )
    assert viewer == str(run.root / f"4d_{run.run_id}.glb")
    assert (
        choice["choices"] == [("All people", "All people"), ("Person 1", "1")] and choice["visible"] is True
    )
    alone = events.show_result("1", request)[w.result_video]
    assert (
        alone == str(run.root / "4d_individual" / "4d_individual_1.mp4")
        and probe(Path(alone)).n_frames == CLIP_T
    )
    assert events.show_result("All people", request)[w.result_video] == result_video
    assert manifest["stages"]["masks"]["started"] == masks_started, "done masks are not redone"
    done = ("camera", "recover", "complete", "refine", "smooth", "export", "render", "bundle")
    assert all(manifest["stages"][s]["status"] == "done" for s in done)
    objs = sorted((run.root / "mesh_4d_individual" / "1").glob("*.obj"))
    assert len(objs) == manifest["stages"]["export"]["files"] >= 1
    assert f"1 person, {len(objs)} meshes" in out[w.status]
    zip_path, npz_path, *bundle = (Path(p) for p in downloads)
    assert zip_path == run.root / f"body4d_{run.run_id}.zip" and npz_path == run.root / "bodies.npz"
    assert [p.relative_to(run.root).as_posix() for p in bundle] == [
        f"people/1/1{suffix}" for suffix in (".glb", ".bvh", ".npz", ".json")
    ]
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        zipped_manifest = json.loads(zf.read(f"{run.run_id}/manifest.json"))
    assert f"{run.run_id}/bodies.npz" in names and f"{run.run_id}/masks/00000000.png" in names
    assert not any("/masks_vis/" in n for n in names), "no mask images by default (outputs.mask_images)"
    assert not any("/mesh_4d_individual/" in n for n in names), "per-frame OBJs only with app.zip_meshes"
    assert {f"{run.run_id}/people/1/1.glb", f"{run.run_id}/4d_{run.run_id}.mp4"} <= names
    with_meshes = {p.as_posix() for p in run_files(run, zip_meshes=True)}
    assert {f"mesh_4d_individual/1/{p.name}" for p in objs} <= with_meshes
    assert not any("/images/" in n for n in names), "the frame cache stays out of the zip"
    assert zipped_manifest["stages"]["export"]["status"] == "done"
    # The zip has its own labelled share of the progress bar (not a silent wait at 100 %).
    zipping = [f for f, desc in progress.calls if desc.startswith("downloads: zipping the run")]
    assert zipping and zipping[0] < 1.0 and zipping[-1] >= 0.99
    bundle_end = max(f for f, desc in progress.calls if desc.startswith("bundle:"))
    assert bundle_end < 0.95, "the stages end before the zip starts"

    # new masks with a second target: the next 4D Generation redoes the bodies for both
    events.add_target(request)
    events.click("Positive", select(110, 20), request)
    events.mask_generation(request, FakeProgress())
    stale = run.manifest["stages"]
    assert all(stale[s]["status"] == "stale" for s in ("recover", "smooth", "export"))
    assert stale["camera"]["status"] == "done", "the camera reads only the video"
    masks_redone = stale["masks"]["started"]
    out = events.generate_4d(request, FakeProgress())
    assert "2 people" in out[w.status]
    assert run.manifest["stages"]["masks"]["started"] == masks_redone, "fresh masks are not redone"
    with zipfile.ZipFile(out[w.downloads][0]) as zf:
        assert f"{run.run_id}/people/2/2.bvh" in zf.namelist()

    # 4D Generation pressed again on the finished run: the same results, nothing recomputed
    finished = run.manifest["stages"]
    again = events.generate_4d(request, FakeProgress())
    assert "2 people" in again[w.status]
    assert [Path(p).name for p in again[w.downloads]] == [Path(p).name for p in out[w.downloads]]
    assert run.manifest["stages"] == finished


def test_scrubbing_after_mask_generation_shows_the_tracked_masks(model_events) -> None:
    from body4d.masks import masks_to_labels, overlay, read_palette_png

    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    events.mask_generation(request, FakeProgress())
    last = CLIP_T - 1
    labels = read_palette_png(session.run.mask_path(last))
    assert labels.any(), "the walker is tracked to the last frame"
    shown = events.scrub(last, request)[w.frame]
    assert np.array_equal(shown, overlay(session.frame(last), labels)), "the tracked mask, not the bare frame"
    # A correction under way on frame 0: that frame shows its new live mask, the others the track.
    events.scrub(0, request)
    out = events.click("Negative", select(PERSON_X + 4, PERSON_Y + 4), request)
    assert session.prompts() != session.mask_prompts
    live = masks_to_labels(session.masks[0], (CLIP_H, CLIP_W))
    assert np.array_equal(out[w.frame], draw_clicks(overlay(session.frame(0), live), session.targets[1]))
    assert np.array_equal(events.scrub(last, request)[w.frame], shown)


def test_cancel_during_mask_generation_marks_the_stage_cancelled(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    replies: list[str] = []
    progress = FakeProgress(hook=lambda fraction, desc: replies.append(events.cancel(request)[w.status]))
    out = events.mask_generation(request, progress)
    assert replies[0].startswith("Cancelled: the running stage stops")
    assert set(out) == {w.status} and out[w.status].startswith("Mask Generation cancelled")
    assert session.run.manifest["stages"]["masks"]["status"] == "cancelled"
    assert not session.run_lock.locked() and not session.cancel.is_set()
    assert events.cancel(request)[w.status] == "Nothing is running."
    assert not session.cancel.is_set(), "a Cancel with nothing running does not stop the next run"
    out = events.mask_generation(request, FakeProgress())  # a new run starts afresh
    assert session.run.manifest["stages"]["masks"]["status"] == "done" and out[w.mask_video] is not None


def test_cancel_during_the_zip_stops_it_and_says_so(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    replies: list[str] = []

    def cancel_in_zip(fraction: float, desc: str) -> None:
        if desc.startswith("downloads:") and not replies:
            replies.append(events.cancel(request)[w.status])

    out = events.generate_4d(request, FakeProgress(hook=cancel_in_zip))
    assert replies == [replies[0]] and replies[0].startswith("Cancelled: the running stage stops")
    assert out[w.status].startswith("4D Generation cancelled")
    run = session.run
    assert not run.path(RunDir.ZIP).exists() and not list(run.root.glob("*.part")), "no partial zip"
    assert run.manifest["stages"]["bundle"]["status"] == "done", "the finished stages are kept"
    out = events.generate_4d(request, FakeProgress())
    assert Path(out[w.downloads][0]) == run.path(RunDir.ZIP) and run.path(RunDir.ZIP).is_file()


def test_a_run_queued_then_cancelled_does_not_start(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    begun = events.begin_run(request)
    assert begun[w.mask_generation]["interactive"] is False and begun[w.generate_4d]["interactive"] is False
    assert begun[w.status] == "Starting…" and session.busy
    assert events.cancel(request)[w.status] == "Cancelled: your queued run will not start."
    out = events.mask_generation(request, FakeProgress())
    assert out[w.status].startswith("Mask Generation cancelled") and not session.run.is_done("masks")
    ended = events.end_run(request)
    assert ended[w.mask_generation]["interactive"] is True and not session.busy


def test_a_queued_user_is_told_another_user_holds_the_gpu(model_events) -> None:
    events, session, request, w = model_events
    other = gr.Request(session_hash="someone-else")
    events.upload(str(session.video_path), other)
    seen: list[str] = []

    def while_running(fraction: float, desc: str) -> None:
        if not seen:
            seen.append(events.begin_run(other)[w.status])

    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    events.mask_generation(request, FakeProgress(hook=while_running))
    assert seen[0].startswith("Queued: another user is running a job (Mask Generation, for ")
    assert events.begin_run(other)[w.status] == "Starting…", "the GPU is free again"


def test_auto_detect_finds_people_without_clicks(model_events) -> None:
    events, session, request, w = model_events
    out = events.auto_detect(request, FakeProgress())
    obj_ids = session.run.manifest["stages"]["masks"]["obj_ids"]
    assert len(obj_ids) >= 1 and Path(out[w.mask_video]).is_file()
    who = "1 person" if len(obj_ids) == 1 else f"{len(obj_ids)} people"  # not "1 people"
    assert f"Auto-detect found {who} (ids " in out[w.status] and session.mask_prompts is None
    assert len(list((session.run.root / "masks").glob("*.png"))) == CLIP_T


def test_targets_added_after_mask_generation_are_used_by_4d_generation(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    events.mask_generation(request, FakeProgress())
    masks_started = session.run.manifest["stages"]["masks"]["started"]
    # A second target clicked after Mask Generation, then straight to 4D Generation.
    events.add_target(request)
    events.click("Positive", select(110, 20), request)
    status = events.generate_4d(request, FakeProgress())[w.status]
    assert status.startswith("The targets changed since Mask Generation, so the masks were made again first.")
    assert "2 people" in status
    stages = session.run.manifest["stages"]
    assert stages["masks"]["started"] > masks_started and stages["masks"]["obj_ids"] == [1, 2]
    # Unchanged clicks: pressing again remakes nothing.
    again = events.generate_4d(request, FakeProgress())[w.status]
    assert not again.startswith("The targets changed") and session.run.manifest["stages"] == stages


def test_finished_runs_are_listed_and_reopen_with_their_results(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    events.generate_4d(request, FakeProgress())
    run_id = session.run.run_id
    # Listing and reopening never touch a run's temporaries (a run of this process may be using them).
    in_use = session.run.scratch / "labels.u8"
    in_use.write_bytes(b"busy")
    listed = events.end_run(request)[w.recent_runs]
    assert (f"{run_id} · walker.mp4 · 4D done", run_id) in listed["choices"] and listed["visible"]
    events.upload(str(session.video_path), request)  # another run of the same clip
    assert session.run.run_id != run_id
    out = events.reopen(run_id, request)
    assert session.run.run_id == run_id and out[w.status].startswith(f"Reopened run {run_id} (walker.mp4)")
    assert out[w.result_video] == str(session.run.result_video_path())
    assert out[w.viewer3d] == str(session.run.scene_glb_path())
    assert Path(out[w.downloads][0]).name == f"body4d_{run_id}.zip"
    assert out[w.mask_video] == str(session.run.mask_video_path())
    assert in_use.read_bytes() == b"busy"
    # Another browser cannot open this session's run (app.list_server_runs is off).
    stranger = gr.Request(session_hash="stranger")
    with pytest.warns(UserWarning):
        refused = events.reopen(run_id, stranger)
    assert "is not in the recent-runs list" in refused[w.status]


def test_re_track_target_corrects_one_target_and_4d_redoes_only_its_frames(model_events) -> None:
    events, session, request, w = model_events
    events.click("Positive", select(PERSON_X, PERSON_Y), request)
    events.mask_generation(request, FakeProgress())
    assert "press Re-track Target" in events.mask_generation(request, FakeProgress())[w.status]
    events.generate_4d(request, FakeProgress())
    events.scrub(5, request)
    events.click("Positive", select(PERSON_X + 10, PERSON_Y + 4), request)
    begun = events.begin_run(request)
    assert begun[w.repair]["interactive"] is False
    out = events.repair(request, FakeProgress())
    events.end_run(request)
    assert out[w.status].startswith("Target 1 was re-propagated from frame 5")
    assert out[w.mask_video] == str(session.run.mask_video_path())
    assert session.mask_prompts == session.prompts(), "4D Generation will not remake every mask"
    out = events.generate_4d(request, FakeProgress())
    assert not out[w.status].startswith("The targets changed")
    recover = session.run.manifest["stages"]["recover"]
    changed = session.run.manifest["stages"]["masks"]["repairs"][-1]["changed"]
    n_changed = sum(b - a + 1 for runs in changed.values() for a, b in runs)
    assert recover["person_frames_estimated"] == n_changed < CLIP_T, "only the changed person-frames"


def test_the_system_panel_shows_device_renderer_and_the_models_in_memory(tiny) -> None:
    from body4d.ui.system import Platform

    cfg, report, caps, models = tiny
    platform = Platform("cpu", "float32", "software (llvmpipe)")
    events, w = bind_events(cfg, SessionStore(), report, caps, models, platform=platform)
    panel = events.restore(None, gr.Request(session_hash="panel"))[w.system]
    assert "**Device** cpu, float32 · **Renderer** software (llvmpipe)" in panel
    assert "SAM-3 on cpu" in panel and "SAM-3D-Body on cpu" in panel and "**GPU memory** no GPU" in panel
    assert events.end_run(gr.Request(session_hash="panel"))[w.system] == panel
