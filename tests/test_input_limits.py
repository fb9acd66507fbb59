"""Bad and hostile input is refused with one clear line (exit 2) before any model loads.

Configs (non-finite or absurd numbers, YAML bombs, wrong containers), oversized or fake frames,
mask folders (lossy, truncated, not images, wrong count or size), prompts (too many clicks or
people, huge numbers), non-regular files and truncated videos.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from body4d.cli import main
from body4d.cli_run import PromptFileError, load_prompts
from body4d.config import _RANGES, _SCHEMA, MAX_CONFIG_BYTES, ConfigError, LimitsConfig, load_config
from body4d.errors import InputError
from body4d.masks import check_mask_folder, encode_palette_png, read_mask_folder, read_palette_png
from body4d.video import VideoError, encode_video, open_video, probe
from tests.conftest import gradient_frames

T, H, W = 8, 64, 96

SCHEMA_NUMERIC = [
    f"{name}.{key}" for name, hints in _SCHEMA.items() for key, hint in hints.items() if hint in (int, float)
]


# --------------------------------------------------------------------------- config


def test_every_numeric_key_is_range_checked() -> None:
    assert "limits.max_frame_pixels" in SCHEMA_NUMERIC and "video.folder_fps" in SCHEMA_NUMERIC
    for key in SCHEMA_NUMERIC:
        name, _, leaf = key.partition(".")
        assert (name, leaf) in _RANGES, f"{key} has no range check in body4d/config.py _RANGES"
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"{key}=-1000000000" for key in SCHEMA_NUMERIC], env={})
    problems = err.value.problems
    assert len(problems) == len(SCHEMA_NUMERIC)
    for key, problem in zip(SCHEMA_NUMERIC, problems, strict=True):
        assert re.match(rf"{re.escape(key)} = -1000000000(\.0)? is out of range: use \S", problem), problem


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            "video.folder_fps=0.0001",
            "video.folder_fps = 0.0001 is out of range: use a frame rate from 1 to 1000 fps",
        ),
        ("sam_3d_body.bbox_padding=1e300", "use a padding factor from 1.0 to 10.0"),
        (
            "limits.max_people=256",
            "limits.max_people = 256 is out of range: use a number of people from 1 to 255",
        ),
        ("limits.max_clicks=0", "limits.max_clicks = 0 is out of range: use at least 1 click"),
        ("video=[1,2]", "video must be a mapping of keys, got list"),
    ],
)
def test_degenerate_values_name_the_key_and_range(override: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override], env={})
    assert says in str(err.value)


def _billion_laughs(indent: str = "") -> str:
    """Nine levels of nine aliases: 9**9 strings once expanded, ~800 bytes of YAML."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("app:\n" + _billion_laughs("  ") + "  host: *l8\n", 2),  # under a real key: was a hang
        ("video: &a\n  max_frames: *a\n", 1),  # recursive: was a RecursionError traceback
        ("video:\n  max_frames: &b [*b]\n", 2),
        ("sam3:\n  detection_prompt: &p person\nrepair: {}\ncamera:\n  ckpt_path: *p\n", 2),
    ],
)
def test_yaml_anchors_and_bombs_are_refused_fast(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert time.perf_counter() - start < 2.0
    (problem,) = err.value.problems
    assert problem == (
        f"{path} uses a YAML anchor or alias at line {line}: write the values out (configs may not use & or *)"
    )


def test_shipped_configs_use_no_anchors() -> None:
    from body4d.config import DEFAULT_CONFIG, _parse_yaml

    for path in DEFAULT_CONFIG.parent.glob("*.yaml"):
        assert _parse_yaml(path.read_text(encoding="utf-8")), path


def test_alias_in_a_set_override_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["app.host=&a [*a]"], env={})
    assert err.value.problems == [
        "override 'app.host=&a [*a]' uses a YAML anchor or alias at line 1: write the values out "
        "(configs may not use & or *)"
    ]


def test_config_file_problems_are_config_errors(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as err:  # a list plus an override: was a TypeError from OmegaConf
        load_config(listed, overrides=["video.crf=3", "video=[1,2]"], env={})
    assert err.value.problems == [
        "the config must be a mapping of sections (paths:, runtime:, ...)",
        "video must be a mapping of keys, got list",
    ]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("video:\n  folder_fps: 25  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml cannot be read \('utf-8' codec can't decode"):
        load_config(latin, env={})
    big = tmp_path / "big.yaml"
    big.write_text("video:\n  crf: 18\n" + "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(
        ConfigError, match=f"big.yaml is {big.stat().st_size} bytes, more than the {MAX_CONFIG_BYTES}"
    ):
        load_config(big, env={})


def test_a_huge_value_is_quoted_short(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text("video:\n  crf: [" + ", ".join(["1"] * 50_000) + "]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    (problem,) = err.value.problems
    assert problem == "video.crf = " + "[" + "1, " * 25 + "1... must be an integer"


def test_a_bad_config_file_exits_2_with_one_line_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clip: Path
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("app:\n" + _billion_laughs("  ") + "  host: *l8\n")
    code, err = _run(["--input_video", str(clip), "--config", str(path)], tmp_path, capsys, monkeypatch)
    assert code == 2
    assert (
        err
        == f"body4d run: 1 configuration problem(s) in {path}: - {path} uses a YAML anchor or alias at line 2: write the values out (configs may not use & or *)"
    )


# --------------------------------------------------------------------------- shared helpers


@pytest.fixture(autouse=True)
def _restore_pil_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`open_video` sets PIL's bomb limit from its argument: give it back after each test."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 frames of 96x64 (H.264 mp4): what the masks below must match."""
    return encode_video(gradient_frames(T, H, W), tmp_path_factory.mktemp("clip") / "clip.mp4", Fraction(30))


def _run(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """``body4d run ARGS``; loading any model fails the test (every refusal must come first).

    Returns:
        The exit code and stderr as one stripped string; no run folder may have been made.
    """
    import body4d.driver

    def no_models(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("models were loaded before the input was refused")

    monkeypatch.setattr(body4d.driver, "load_models", no_models)
    out = tmp_path / "runs"
    code = main(["run", *args, "--output_dir", str(out), "--set", "runtime.device=cpu"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())
    return code, err


def _labels(t: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[10:40, 5 + 2 * t : 30 + 2 * t] = 1
    lab[30:60, 60:90] = 2
    return lab


def _mask_folder(folder: Path) -> Path:
    folder.mkdir()
    for t in range(T):
        (folder / f"{t:05d}.png").write_bytes(encode_palette_png(_labels(t)))
    return folder


# --------------------------------------------------------------------------- frames and videos


def test_frames_over_the_pixel_limit_are_refused_from_the_header(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("L", (7000, 6000)).save(folder / "0.png")  # 42 Mpx in 41 KB
    start = time.perf_counter()
    with pytest.raises(VideoError) as err:
        open_video(folder, max_pixels=33_177_600)
    assert time.perf_counter() - start < 1.0  # the header only: decoding would take longer
    assert str(err.value) == (
        f"{folder / '0.png'} has 7000x6000 frames (42000000 pixels), more than "
        "limits.max_frame_pixels=33177600: downscale it (e.g. to 3840x2160) or raise the limit "
        "with --set limits.max_frame_pixels=42000000"
    )
    assert open_video(folder, max_pixels=42_000_000).info.width == 7000  # raising the key works


def test_a_decompression_bomb_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("1", (100, 100)).save(folder / "0.png")
    with pytest.raises(VideoError, match=r"0.png declares more than 2000 pixels, twice the limit of 1000"):
        probe(folder, max_pixels=1000)  # PIL refuses it at open, before any size is known


def test_a_video_over_the_pixel_limit_is_refused(make_video) -> None:  # noqa: ANN001 (fixture)
    path = make_video(n=3, height=64, width=96)
    with pytest.raises(
        VideoError, match=r"has 96x64 frames \(6144 pixels\), more than limits.max_frame_pixels=6000"
    ):
        open_video(path, max_pixels=6000)
    assert len(open_video(path, max_pixels=6144)) == 3


def test_a_long_folder_is_refused_before_its_images_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.png").write_text("not an image")
    with pytest.raises(VideoError, match=r"has 5 frames, more than video.max_frames=3"):
        open_video(folder, max_frames=3)
    with pytest.raises(VideoError, match=r"0.png is not a readable image"):
        open_video(folder)


def _in_thread(fn, *args):  # noqa: ANN001, ANN002, ANN202 (any callable)
    """``fn(*args)`` in a daemon thread joined for 10 s: (finished, exception raised)."""
    box: list[BaseException | None] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            box.append(exc)
        else:
            box.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    return bool(box), box[0] if box else None


def test_a_fifo_named_like_a_video_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    finished, exc = _in_thread(probe, fifo)
    assert finished, "probe blocked on a FIFO"
    assert isinstance(exc, VideoError)
    assert (
        str(exc)
        == f"{fifo} is not a regular file (a pipe, device or socket): pass the video as an ordinary file"
    )


def test_a_cut_faststart_mp4_is_refused_by_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = encode_video(gradient_frames(40, 64, 96), tmp_path / "whole.mp4", Fraction(25))
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: the index lists every frame
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:-5])  # inside the last frame
    assert probe(whole).n_frames == 40
    with pytest.raises(
        VideoError, match=r"cut.mp4 is (damaged in its last frames|truncated: its index lists 40)"
    ):
        probe(cut)
    assert main(["probe", str(cut)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"body4d probe: {cut} is ") and "re-download or re-export" in err


# --------------------------------------------------------------------------- mask folders


def _jpeg_as_png(path: Path) -> None:
    Image.fromarray(_labels(3)).save(path, format="JPEG", quality=50)


def _cut_end(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def _cut_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _rgb(path: Path) -> None:
    Image.fromarray(np.stack([_labels(3)] * 3, axis=-1)).save(path)


def _small(path: Path) -> None:
    path.write_bytes(encode_palette_png(np.zeros((10, 10), np.uint8)))


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_jpeg_as_png, "00003.png is JPEG data, not a label map: save masks as lossless palette"),
        (lambda p: p.write_text("hello"), "00003.png is not a readable image (cannot identify image file"),
        (_cut_end, "00003.png is damaged or truncated (Truncated File Read): export it again"),
        (_cut_header, "00003.png is not a readable image (Truncated File Read)"),
        (_rgb, "00003.png is a PNG of mode RGB, not a label map"),
        (_small, "mask 00003.png is 10x10 but the video is 96x64: masks must have the frame size"),
        (Path.unlink, "holds 7 PNG masks but the video has 8 frames"),
        (
            _fifo,
            "00003.png is not a regular file (a pipe, device or socket): pass the mask as an ordinary file",
        ),
    ],
)
def test_bad_mask_folders_exit_2_before_any_model(
    clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    damage,  # noqa: ANN001 (a function of the mask path)
    says: str,
) -> None:
    masks = _mask_folder(tmp_path / "masks")
    damage(masks / "00003.png")
    with pytest.raises(InputError, match=re.escape(says)):
        check_mask_folder(masks, T, H, W)
    code, err = _run(["--input_video", str(clip), "--masks", str(masks)], tmp_path, capsys, monkeypatch)
    assert code == 2 and says in err


def test_good_mask_folders_pass_and_16_bit_ids_are_read(tmp_path: Path) -> None:
    masks = _mask_folder(tmp_path / "masks")
    Image.fromarray(_labels(3).astype(np.uint16)).save(masks / "00003.png")
    assert Image.open(masks / "00003.png").mode == "I;16"
    files = check_mask_folder(masks, T, H, W)
    assert [f.name for f in files] == [f"{t:05d}.png" for t in range(T)]
    seg = read_mask_folder(masks, np.zeros((T, H, W), np.uint8))
    assert seg.track.obj_ids == (1, 2)
    np.testing.assert_array_equal(seg.track.labels[3], _labels(3))
    Image.fromarray(np.full((H, W), 300, np.uint16)).save(masks / "00004.png")
    with pytest.raises(InputError, match=r"00004.png holds the value 300: object ids are 0..255"):
        read_palette_png(masks / "00004.png")


# --------------------------------------------------------------------------- prompts


def _prompts(path: Path, n_ids: int, clicks_per_id: int = 1) -> Path:
    click = {"frame": 0, "x": 15, "y": 25}
    path.write_text(json.dumps({str(i): [click] * clicks_per_id for i in range(1, n_ids + 1)}))
    return path


def test_prompt_limits_are_checked_before_the_clicks(tmp_path: Path) -> None:
    limits = LimitsConfig(max_people=3, max_clicks=10)
    assert load_prompts(_prompts(tmp_path / "ok.json", 3, 3), limits).obj_ids == [1, 2, 3]
    with pytest.raises(PromptFileError) as err:
        load_prompts(_prompts(tmp_path / "people.json", 4), limits)
    assert str(err.value) == (
        f"{tmp_path / 'people.json'} prompts 4 targets, more than limits.max_people=3: prompt fewer "
        "people or raise the limit with --set limits.max_people=4"
    )
    with pytest.raises(
        PromptFileError, match=r"holds 12 clicks, more than limits.max_clicks=10: .* limits.max_clicks=12"
    ):
        load_prompts(_prompts(tmp_path / "clicks.json", 3, 4), limits)
    big = _prompts(tmp_path / "big.json", 1, 1000)
    start = time.perf_counter()
    with pytest.raises(
        PromptFileError, match=r"big.json is \d+ bytes, more than 10240 \(limits.max_clicks=10 clicks\)"
    ):
        load_prompts(big, limits)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"1": [{"frame": 0, "x": ' + "9" * 400 + ', "y": 25}]}', "x must be a finite number of pixels"),
        ('{"1": [{"frame": 0, "x": 1, "y": 1e400}]}', "y must be a finite number of pixels"),
        ('{"1": [{"frame": 0, "x": ' + "9" * 5000 + ', "y": 25}]}', "is not valid JSON (Exceeds the limit"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON (maximum recursion depth"),
    ],
)
def test_absurd_numbers_in_prompts_are_prompt_errors(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PromptFileError, match=re.escape(says)):
        load_prompts(path)


def test_a_fifo_prompts_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    finished, exc = _in_thread(load_prompts, fifo)
    assert finished and isinstance(exc, PromptFileError)
    assert "is not a regular file" in str(exc)


def test_too_many_prompted_people_exit_2_before_any_model(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = _prompts(tmp_path / "crowd.json", 255)
    code, err = _run(["--input_video", str(clip), "--prompts", str(prompts)], tmp_path, capsys, monkeypatch)
    assert code == 2 and "prompts 255 targets, more than limits.max_people=64" in err


def test_oversized_frames_exit_2_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("L", (10000, 10000)).save(folder / "0.png")  # 100 Mpx in 100 KB: was 24 GB and killed
    code, err = _run(["--input_video", str(folder)], tmp_path, capsys, monkeypatch)
    assert code == 2
    assert (
        "0.png declares more than 66355200 pixels, twice the limit of 33177600 (limits.max_frame_pixels)"
        in err
    )


def test_each_prompted_target_is_logged(
    clip: Path, tiny_ckpt_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps({"1": [{"frame": 0, "x": 15, "y": 25}], "4": [{"frame": 3, "x": 75, "y": 45}]})
    )
    caplog.set_level(logging.INFO, logger="body4d.stages.segment")
    args = ["run", "--input_video", str(clip), "--prompts", str(prompts), "--stop-after", "masks"]
    args += ["--output_dir", str(tmp_path / "o"), "--set", f"paths.ckpt_root={tiny_ckpt_root}"]
    assert main([*args, "--set", "runtime.device=cpu", "--set", "runtime.dtype=fp32"]) == 0
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prompting target")]
    assert logged == ["prompting target 1 (1 of 2)", "prompting target 4 (2 of 2)"]


# --------------------------------------------------------------------------- app upload


def test_the_app_refuses_an_upload_over_max_upload_mb(tmp_path: Path, clip: Path) -> None:
    from body4d.session import Session
    from body4d.ui.loading import load_video

    cfg = load_config(overrides=[f"runtime.output_dir={tmp_path / 'out'}", "app.max_upload_mb=0.001"], env={})
    size = clip.stat().st_size
    assert size > 0.001 * 2**20
    with pytest.raises(VideoError) as err:
        load_video(cfg, Session(session_id="big"), clip)
    assert str(err.value) == (
        f"clip.mp4 is {size / 2**20:.1f} MB, more than the 0.001 MB this app accepts (app.max_upload_mb): "
        "upload a shorter or more compressed video"
    )
    assert not (tmp_path / "out").exists()
    cfg = cfg.replace(**{"app.max_upload_mb": 1.0, "limits.max_frame_pixels": 6000})
    with pytest.raises(VideoError, match=r"more than limits.max_frame_pixels=6000"):
        load_video(cfg, Session(session_id="wide"), clip)
