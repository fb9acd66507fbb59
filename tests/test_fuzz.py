"""Fuzz suite: hostile input of every kind through the CLI and the app's upload path.

Every case runs the real entry point (``body4d.cli.main`` in this process, or ``python -m body4d``
in a subprocess where a case could block the process) and fails on a traceback, a wrong exit code,
a case that takes longer than `CASE_TIMEOUT_S`, or a file left behind: a bad input refused before
any work leaves no run folder, and no case leaves a temporary (``*.part``) file anywhere. The
terminal summary prints how many cases were tried (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from body4d.cli import main
from body4d.errors import EXIT_BAD_INPUT, EXIT_OK
from body4d.video import encode_video
from tests.conftest import run_folders, tiny_cpu_args

REPO = Path(__file__).resolve().parents[1]
# No case may take longer (seconds): a bad input is refused before any work.
CASE_TIMEOUT_S = 30
T, H, W = 6, 48, 64
FPS = Fraction(25)


class CaseTimeout(BaseException):
    """A case ran past `CASE_TIMEOUT_S` (BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def bounded(seconds: int = CASE_TIMEOUT_S) -> Iterator[None]:
    """Raise `CaseTimeout` in this (main) thread when the block takes longer than ``seconds``."""

    def expire(_signum: int, _frame: object) -> None:
        raise CaseTimeout(f"no answer within {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files (atomic writes' ``*.part``) under ``folders``."""
    return [p for folder in folders if folder.exists() for p in folder.rglob("*.part")]


def attempt(
    argv: list[str],
    expected: set[int],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> tuple[int, str]:
    """Run ``body4d ARGV`` in this process; assert its exit code is in ``expected``, and that a
    failure says one line on stderr, with no traceback printed or logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO), bounded():
        code = main(argv)
    out, err = capsys.readouterr()
    assert code in expected, f"body4d {' '.join(argv)} exited {code}, expected {sorted(expected)}: {err}"
    assert "Traceback" not in err + out
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    if code != EXIT_OK:
        lines = [line for line in err.splitlines() if line.strip()]
        # One line says what is wrong and the fix; a config lists each of its problems below it.
        assert lines and lines[0].startswith(f"body4d {argv[0]}"), f"no error message on stderr: {err!r}"
        assert len(lines) == 1 or lines[0].rstrip().endswith(":"), f"expected one line on stderr: {lines}"
        assert len(err) > 40, f"an error says what is wrong and the fix: {err!r}"
    return code, err


# ---------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(T)]
    return encode_video(frames, tmp_path_factory.mktemp("fuzz_clip") / "clip.mp4", FPS)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def png_bomb(path: Path, side: int) -> Path:
    """A real, complete all-black grayscale PNG of ``side`` x ``side`` pixels (a few hundred KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def audio_only(path: Path) -> Path:
    """An mp4 holding one second of AAC audio and no video stream."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = np.zeros((1, 1024), np.float32)
        for i in range(16):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


TRUNCATE_AT = (0.0, 0.002, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def _truncated(fraction: float):
    def make(folder: Path, good: Path) -> Path:
        data = good.read_bytes()
        path = folder / f"truncated_{fraction}.mp4"
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return make


def _random(seed: int, suffix: str):
    def make(folder: Path, _good: Path) -> Path:
        path = folder / f"random_{seed}{suffix}"
        path.write_bytes(np.random.default_rng(seed).bytes(4096 * (seed + 1)))
        return path

    return make


def _flipped(folder: Path, good: Path) -> Path:
    data = bytearray(good.read_bytes())
    for i in np.random.default_rng(2).integers(len(data) // 4, len(data), 40):
        data[i] ^= 0xFF
    path = folder / "flipped.mp4"
    path.write_bytes(bytes(data))
    return path


def _text(folder: Path, _good: Path) -> Path:
    path = folder / "text.mp4"
    path.write_text("this is not a video\n")
    return path


def _png_as_mp4(folder: Path, _good: Path) -> Path:
    path = folder / "image.mp4"
    Image.new("RGB", (W, H)).save(path, format="PNG")
    return path


def _frames(name: str, fill) -> object:
    def make(folder: Path, _good: Path) -> Path:
        frames = folder / name
        frames.mkdir()
        fill(frames)
        return frames

    return make


def _two_sizes(frames: Path) -> None:
    Image.new("RGB", (W, H)).save(frames / "00000.png")
    Image.new("RGB", (W + 2, H)).save(frames / "00001.png")


# Name -> (builder(folder, good clip) -> the input path, exit codes allowed). A cut-off or damaged
# file may still hold decodable frames (0: the run works on those); everything else is bad input.
BAD_VIDEOS = {
    **{f"truncated at {f:.1%}": (_truncated(f), {EXIT_OK, EXIT_BAD_INPUT}) for f in TRUNCATE_AT},
    **{f"random bytes {s}": (_random(s, ".mp4"), {EXIT_BAD_INPUT}) for s in range(3)},
    "random bytes named .avi": (_random(7, ".avi"), {EXIT_BAD_INPUT}),
    "40 flipped bytes": (_flipped, {EXIT_OK, EXIT_BAD_INPUT}),
    "text named .mp4": (_text, {EXIT_BAD_INPUT}),
    # The content decides, not the name: FFmpeg reads a PNG as a one-frame video.
    "png named .mp4": (_png_as_mp4, {EXIT_OK, EXIT_BAD_INPUT}),
    "audio only": (lambda folder, _good: audio_only(folder / "audio.mp4"), {EXIT_BAD_INPUT}),
    "empty frame folder": (_frames("empty", lambda _f: None), {EXIT_BAD_INPUT}),
    "frame folder of text": (
        _frames("text_frames", lambda f: (f / "00000.png").write_text("not a png")),
        {EXIT_BAD_INPUT},
    ),
    "frame declaring 100000x100000": (
        _frames("declared", lambda f: png_header_only(f / "00000.png", 100_000, 100_000)),
        {EXIT_BAD_INPUT},
    ),
    "decompression bomb 12000x12000": (
        _frames("bomb", lambda f: png_bomb(f / "00000.png", 12_000)),
        {EXIT_BAD_INPUT},
    ),
    "frames of two sizes": (_frames("mixed", _two_sizes), {EXIT_BAD_INPUT}),
    "missing file": (lambda folder, _good: folder / "missing.mp4", {EXIT_BAD_INPUT}),
}


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_probe_refuses_hostile_videos(
    case: str,
    good_clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    build, codes = BAD_VIDEOS[case]
    attempt(["probe", str(build(tmp_path, good_clip))], codes, capsys, caplog)


@pytest.fixture(scope="module")
def ckpt_root(tiny_ckpt_root: Path) -> Path:
    return tiny_ckpt_root


@pytest.fixture(scope="module")
def good_masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Palette PNG masks for `good_clip`: object 1 in the top-left corner of every frame."""
    from body4d.masks import encode_palette_png

    folder = tmp_path_factory.mktemp("fuzz_masks")
    labels = np.zeros((H, W), np.uint8)
    labels[4:20, 4:20] = 1
    for i in range(T):
        (folder / f"{i:05d}.png").write_bytes(encode_palette_png(labels))
    return folder


def run_args(ckpt_root: Path, out: Path, *args: str) -> list[str]:
    """``body4d run ARGS`` on the tiny checkpoints, CPU, writing under ``out``."""
    return [
        "run",
        *args,
        "--output_dir",
        str(out),
        *tiny_cpu_args(ckpt_root),
    ]


def check_outputs(out: Path, code: int) -> None:
    """Nothing half-written anywhere; a refused input made no run folder; a finished run is done."""
    assert not leftovers(out), f"temporary files left: {leftovers(out)}"
    runs = run_folders(out)
    if code == EXIT_BAD_INPUT:
        assert not runs, f"a refused input left run folders {runs}"
    elif code == EXIT_OK:
        (run,) = runs
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["stages"]["masks"]["status"] == "done"


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_run_refuses_hostile_videos_before_any_work(
    case: str,
    good_clip: Path,
    good_masks: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    build, codes = BAD_VIDEOS[case]
    video = build(tmp_path, good_clip)
    out = tmp_path / "out"
    argv = run_args(
        ckpt_root, out, "--input_video", str(video), "--masks", str(good_masks), "--stop-after", "masks"
    )
    code, _ = attempt(argv, codes, capsys, caplog)
    check_outputs(out, code)


def test_fifo_named_mp4_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO blocks until a writer comes: only a subprocess can show it does not hang."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for argv in (
        ["probe", str(fifo)],
        ["run", "--input_video", str(fifo), "--output_dir", str(tmp_path / "o")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "body4d", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT_S * 2,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == EXIT_BAD_INPUT, done.stderr
        assert "Traceback" not in done.stderr
        assert "pipe.mp4" in done.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---------------------------------------------------------------- prompts

CLICK = {"frame": 0, "x": 10, "y": 10, "positive": True}
BAD_PROMPTS: dict[str, str | bytes] = {
    "empty file": "",
    "not JSON": "{obj: [",
    "a JSON list": json.dumps([CLICK]),
    "a JSON string": json.dumps("1"),
    "null": "null",
    "empty object": "{}",
    "id not a number": json.dumps({"abc": [CLICK]}),
    "id zero": json.dumps({"0": [CLICK]}),
    "negative id": json.dumps({"-3": [CLICK]}),
    "id 10**30": json.dumps({str(10**30): [CLICK]}),
    "id 256": json.dumps({"256": [CLICK]}),
    "clicks not a list": json.dumps({"1": CLICK}),
    "no clicks": json.dumps({"1": []}),
    "click not an object": json.dumps({"1": [[0, 10, 10]]}),
    "click without x": json.dumps({"1": [{"frame": 0, "y": 10}]}),
    "x a string": json.dumps({"1": [{**CLICK, "x": "ten"}]}),
    "x true": json.dumps({"1": [{**CLICK, "x": True}]}),
    "x NaN": '{"1": [{"frame": 0, "x": NaN, "y": 10}]}',
    "x Infinity": '{"1": [{"frame": 0, "x": Infinity, "y": 10}]}',
    "x 10**30": json.dumps({"1": [{**CLICK, "x": 10**30}]}),
    "x outside the frame": json.dumps({"1": [{**CLICK, "x": W + 5}]}),
    "negative y": json.dumps({"1": [{**CLICK, "y": -1}]}),
    "frame past the end": json.dumps({"1": [{**CLICK, "frame": T + 10}]}),
    "negative frame": json.dumps({"1": [{**CLICK, "frame": -1}]}),
    "frame 2.5": json.dumps({"1": [{**CLICK, "frame": 2.5}]}),
    "frame 10**30": json.dumps({"1": [{**CLICK, "frame": 10**30}]}),
    "positive a string": json.dumps({"1": [{**CLICK, "positive": "yes"}]}),
    "unknown field": json.dumps({"1": [{**CLICK, "label": 1}]}),
    "only negative clicks": json.dumps({"1": [{**CLICK, "positive": False}]}),
    "duplicate ids": '{"1": [' + json.dumps(CLICK) + '], "1": [' + json.dumps(CLICK) + "]}",
    "not UTF-8": b'{"1": [{"frame": 0, "x": 10, "y": 10, "note": "\xff\xfe"}]}',
    "255 ids": json.dumps({str(i): [CLICK] for i in range(1, 256)}),
    "a million clicks": json.dumps({"1": [CLICK] * 1_000_000}),
    "deeply nested": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_run_refuses_bad_prompts_before_any_work(
    case: str,
    good_clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = BAD_PROMPTS[case]
    prompts = tmp_path / "prompts.json"
    if isinstance(text, bytes):
        prompts.write_bytes(text)
    else:
        prompts.write_text(text)
    out = tmp_path / "out"
    argv = run_args(ckpt_root, out, "--input_video", str(good_clip), "--prompts", str(prompts))
    attempt(argv, {EXIT_BAD_INPUT}, capsys, caplog)
    check_outputs(out, EXIT_BAD_INPUT)


# ---------------------------------------------------------------- masks


def _mask_png(folder: Path, i: int, labels: np.ndarray) -> None:
    from body4d.masks import encode_palette_png

    (folder / f"{i:05d}.png").write_bytes(encode_palette_png(labels))


def _masks(fill) -> object:
    def make(folder: Path) -> Path:
        masks = folder / "masks"
        masks.mkdir()
        fill(masks)
        return masks

    return make


def _all_good_but(last) -> object:
    """T good masks, then ``last(masks_folder)`` spoils one."""

    def fill(masks: Path) -> None:
        labels = np.zeros((H, W), np.uint8)
        labels[4:20, 4:20] = 1
        for i in range(T):
            _mask_png(masks, i, labels)
        last(masks)

    return _masks(fill)


def _jpeg_as_png(masks: Path) -> None:
    labels = np.zeros((H, W), np.uint8)
    labels[4:20, 4:20] = 1
    Image.fromarray(labels).save(masks / "00002.png", format="JPEG", quality=50)


def _truncate(masks: Path) -> None:
    data = (masks / "00003.png").read_bytes()
    (masks / "00003.png").write_bytes(data[: len(data) // 2])


BAD_MASKS = {
    "no such folder": lambda folder: folder / "nowhere",
    "a file, not a folder": lambda folder: (folder / "m.png").write_bytes(b"x") and folder / "m.png",
    "empty folder": _masks(lambda m: None),
    "one mask too few": _all_good_but(lambda m: (m / f"{T - 1:05d}.png").unlink()),
    "one mask too many": _all_good_but(lambda m: _mask_png(m, T, np.zeros((H, W), np.uint8))),
    "a mask of another size": _all_good_but(lambda m: _mask_png(m, 1, np.zeros((H + 1, W), np.uint8))),
    "JPEG data named .png": _all_good_but(_jpeg_as_png),
    "text named .png": _all_good_but(lambda m: (m / "00001.png").write_text("mask")),
    "truncated png": _all_good_but(_truncate),
    "RGB png": _all_good_but(lambda m: Image.new("RGB", (W, H), (3, 4, 5)).save(m / "00004.png")),
    "gap in the numbering": _all_good_but(lambda m: (m / "00002.png").rename(m / "00009.png")),
    "mask declaring 100000x100000": _all_good_but(
        lambda m: png_header_only(m / "00000.png", 100_000, 100_000)
    ),
}


@pytest.mark.parametrize("case", list(BAD_MASKS))
def test_run_refuses_bad_masks_before_any_work(
    case: str,
    good_clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "in").mkdir()
    masks = BAD_MASKS[case](tmp_path / "in")
    out = tmp_path / "out"
    argv = run_args(
        ckpt_root, out, "--input_video", str(good_clip), "--masks", str(masks), "--stop-after", "masks"
    )
    attempt(argv, {EXIT_BAD_INPUT}, capsys, caplog)
    check_outputs(out, EXIT_BAD_INPUT)


# ---------------------------------------------------------------- config files and --set

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
BAD_CONFIG_FILES: dict[str, str | bytes] = {
    "a YAML list": "- 1\n- 2\n",
    "a scalar": "42\n",
    "not YAML": "video: [unclosed\n",
    "not UTF-8": b"video:\n  max_frames: 10 # \xff\xfe\n",
    "unknown section": "nosuch:\n  key: 1\n",
    "unknown key": "video:\n  no_such_key: 1\n",
    "section a list": "video: [1, 2]\n",
    "int key a string": "video:\n  max_frames: many\n",
    "float .inf": "smoothing:\n  beta: .inf\n",
    "float .nan": "sam_3d_body:\n  bbox_padding: .nan\n",
    "negative frames": "video:\n  max_frames: -5\n",
    "tiny folder fps": "video:\n  folder_fps: 0.0001\n",
    "billion laughs": BILLION_LAUGHS,
    "recursive anchor": "video: &v\n  loop: *v\n",
    "tabs": "video:\n\tmax_frames: 3\n",
}


@pytest.mark.parametrize("case", list(BAD_CONFIG_FILES))
def test_bad_config_files_are_refused(
    case: str,
    tiny_ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = BAD_CONFIG_FILES[case]
    config = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text)
    for argv in (
        ["check", "--config", str(config), "--set", f"paths.ckpt_root={tiny_ckpt_root}"],
        [
            "check",
            "--config",
            str(config),
            "--set",
            f"paths.ckpt_root={tiny_ckpt_root}",
            "--set",
            "video.crf=20",
        ],
    ):
        _, err = attempt(argv, {EXIT_BAD_INPUT}, capsys, caplog)
        assert "bad.yaml" in err or "config" in err.lower()


BAD_SETS = [
    "video=[1,2]",
    "video=3",
    "nokey",
    "=1",
    "video.=1",
    ".max_frames=1",
    "video.max_frames",
    "video.max_frames=abc",
    "video.max_frames=-1",
    "video.max_frames=1e400",
    "video.max_frames=[1]",
    "video.max_frames={a: 1}",
    "smoothing.beta=.inf",
    "smoothing.beta=.nan",
    "sam_3d_body.bbox_padding=.inf",
    "sam_3d_body.batch_size=0",
    "video.folder_fps=0.0001",
    "runtime.device=tpu",
    "runtime.dtype=fp8",
    "no_section.key=1",
    "video.max_frames=&a [*a]",
    "video.max_frames=" + "9" * 5000,
]


@pytest.mark.parametrize("value", BAD_SETS)
def test_bad_set_values_are_refused(
    value: str, tiny_ckpt_root: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    attempt(
        ["check", "--set", f"paths.ckpt_root={tiny_ckpt_root}", "--set", value],
        {EXIT_BAD_INPUT},
        capsys,
        caplog,
    )


def test_the_untouched_inputs_are_accepted(
    good_clip: Path,
    good_masks: Path,
    tiny_ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The baseline every case spoils: the same clip, masks, config and overrides are fine."""
    config = tmp_path / "good.yaml"
    config.write_text("video:\n  max_frames: 100\nsmoothing:\n  beta: 0.7\n")
    root = f"paths.ckpt_root={tiny_ckpt_root}"
    attempt(["probe", str(good_clip)], {EXIT_OK}, capsys, caplog)
    attempt(
        ["check", "--config", str(config), "--set", root, "--set", "video.crf=20"], {EXIT_OK}, capsys, caplog
    )
    out = tmp_path / "out"
    argv = run_args(
        tiny_ckpt_root,
        out,
        "--input_video",
        str(good_clip),
        "--masks",
        str(good_masks),
        "--stop-after",
        "masks",
    )
    attempt(argv, {EXIT_OK}, capsys, caplog)
    check_outputs(out, EXIT_OK)


# ---------------------------------------------------------------- names and run ids

HOSTILE_NAMES = [
    "vidéo 動画 🎥.mp4",
    "-starts-with-dash.mp4",
    "spaces  and\ttab.mp4",
    "quote'\"$(touch pwned).mp4",
    "x" * 200 + ".mp4",
    "..mp4",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_work(
    name: str,
    good_clip: Path,
    good_masks: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A legal file name is only a name: the run works, and nothing is written outside its folder."""
    video = tmp_path / name
    video.write_bytes(good_clip.read_bytes())
    out = tmp_path / "out"
    argv = run_args(
        ckpt_root, out, f"--input_video={video}", "--masks", str(good_masks), "--stop-after", "masks"
    )
    attempt(argv, {EXIT_OK}, capsys, caplog)
    check_outputs(out, EXIT_OK)
    assert not (REPO / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out"])


BAD_RUN_IDS = [
    "",
    "../escape",
    "../../etc",
    "/abs/path",
    "a/b",
    ".",
    "..",
    "run id with spaces",
    "運行",
    "x" * 300,
    "20260101_000000_000_deadbeef/..",
    "nosuchrun",
]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_hostile_run_ids_are_refused(
    run_id: str,
    good_clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "runs" / "out"
    out.mkdir(parents=True)
    argv = run_args(ckpt_root, out, "--input_video", str(good_clip), f"--resume={run_id}")
    attempt(argv, {EXIT_BAD_INPUT}, capsys, caplog)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["out"]
    assert not any(out.iterdir())


# ---------------------------------------------------------------- the app's upload path


@pytest.mark.parametrize("case", [c for c in BAD_VIDEOS if BAD_VIDEOS[c][1] == {EXIT_BAD_INPUT}])
def test_app_upload_refuses_hostile_videos(case: str, good_clip: Path, tmp_path: Path) -> None:
    """The upload handler's loader: a clear `InputError`, no run folder, the session still empty."""
    from body4d.config import load_config
    from body4d.errors import InputError
    from body4d.session import Session
    from body4d.ui.loading import load_video

    build, _ = BAD_VIDEOS[case]
    video = build(tmp_path, good_clip)
    out = tmp_path / "out"
    cfg = load_config(overrides=[f"runtime.output_dir={out}"])
    session = Session("fuzz")
    with bounded(), pytest.raises(InputError) as raised:
        load_video(cfg, session, video)
    assert len(str(raised.value)) > 20 and "\n" not in str(raised.value)
    assert session.info is None
    check_outputs(out, EXIT_BAD_INPUT)
