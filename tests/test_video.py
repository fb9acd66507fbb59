from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from body4d.video import VideoError, encode_video, open_video, probe
from tests.conftest import gradient_frames, set_mp4_rotation


# ----------------------------------------------------------------------------- real clip
def test_vtest_probe_is_exact(vtest: Path) -> None:
    info = probe(vtest)
    assert (info.n_frames, info.fps, info.width, info.height) == (795, Fraction(10), 768, 576)
    assert info.codec == "msmpeg4"
    assert info.duration == pytest.approx(79.5)


def test_vtest_random_access_matches_sequential(vtest: Path) -> None:
    video = open_video(vtest)
    sequential = list(video.iter_range(398, 404))
    for k, expected in enumerate(sequential):
        assert np.array_equal(video.frame(398 + k), expected)
    assert not np.array_equal(sequential[0], sequential[5])  # people move
    assert video.frame(794).shape == (576, 768, 3)
    with pytest.raises(IndexError, match="outside the video"):
        video.frame(795)


def test_vtest_transcodes_to_browser_playable_mp4(vtest: Path, tmp_path: Path) -> None:
    video = open_video(vtest)
    out = encode_video(video.iter_range(0, 40), tmp_path / "vtest.mp4", video.info.fps)
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert s.average_rate == Fraction(10)
        n = sum(1 for _ in c.decode(video=0))
    assert n == 40
    data = out.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat"), "moov atom must precede mdat (+faststart)"
    info = probe(out)
    assert (info.width, info.height, info.n_frames) == (768, 576, 40)
    first = open_video(out).frame(0).astype(int)
    assert np.abs(first - video.frame(0).astype(int)).mean() < 6  # visually the same frame


def test_vtest_stream_decodes_every_frame_once(vtest: Path) -> None:
    video = open_video(vtest, max_side=192)
    shapes = {frame.shape for frame in video}
    assert shapes == {(144, 192, 3)}
    assert video.frames_decoded == 795


def test_forward_random_access_decodes_instead_of_seeking(make_video) -> None:
    """Frames ahead of the decoder within one GOP are reached by decoding on, not by a seek."""
    video = open_video(make_video(n=40))
    keyframes = video._source.keyframes
    assert keyframes[0] == 0
    stop = keyframes[1] if len(keyframes) > 1 else 40
    targets = [2, 5, stop - 1]
    frames = {i: video.frame(i) for i in targets}
    assert video.frames_decoded == stop  # 0 .. stop-1 once each
    fresh = open_video(make_video(n=40, name="again.mp4"))
    assert all(np.array_equal(frames[i], fresh.frame(i)) for i in targets)


# ----------------------------------------------------------------------------- synthetic
def test_odd_size_is_padded_and_frames_keep_order(make_video) -> None:
    path = make_video(n=12, height=479, width=853)
    info = probe(path)
    assert (info.width, info.height) == (854, 480)  # yuv420p needs even sizes: one edge pixel added
    video = open_video(path)
    means = [video.frame(i)[:, 200:].mean() for i in range(12)]
    assert means == pytest.approx([i * 8 for i in range(12)], abs=2.5)


def test_ntsc_rate_is_kept_exactly(make_video) -> None:
    path = make_video(n=15, fps=Fraction(30000, 1001))
    info = probe(path)
    assert info.fps == Fraction(30000, 1001)
    assert info.n_frames == 15
    assert info.duration == pytest.approx(15 * 1001 / 30000)


def test_portrait_clip(make_video) -> None:
    info = probe(make_video(n=4, height=160, width=90))
    assert (info.width, info.height) == (90, 160)


@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_rotation_metadata_is_applied(make_video, tmp_path: Path, clockwise: int) -> None:
    src = make_video(n=3, height=32, width=64)
    rotated = set_mp4_rotation(src, tmp_path / f"rot{clockwise}.mp4", clockwise)
    info = probe(rotated)
    expected_size = (32, 64) if clockwise in (90, 270) else (64, 32)
    assert (info.width, info.height) == expected_size
    frame = open_video(rotated).frame(0)
    green = frame[..., 1] > 200  # the band that was on the left edge
    where = {90: green[:4].all(), 180: green[:, -4:].all(), 270: green[-4:].all()}
    assert where[clockwise], f"band not where a {clockwise} degree clockwise rotation puts it"


def test_max_side_downscales_keeping_aspect(make_video) -> None:
    video = open_video(make_video(n=3, height=200, width=400), max_side=100)
    assert (video.info.width, video.info.height) == (100, 50)
    assert video.frame(2).shape == (50, 100, 3)


def test_max_frames_refuses_long_video_with_fix(make_video) -> None:
    with pytest.raises(VideoError, match=r"more than video.max_frames=5.*--set video.max_frames=10"):
        open_video(make_video(n=10), max_frames=5)


# ----------------------------------------------------------------------------- frame folders
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_frame_folder_natural_sort(tmp_path: Path, ext: str) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = gradient_frames(12, 40, 60)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i}{ext}")  # frame_10 sorts after frame_9
    (folder / "notes.txt").write_text("ignored")
    video = open_video(folder, folder_fps=Fraction(24))
    assert (len(video), video.info.fps, video.info.width, video.info.height) == (12, Fraction(24), 60, 40)
    means = [video.frame(i)[:, 20:].mean() for i in range(12)]
    assert means == pytest.approx([i * 8 for i in range(12)], abs=2.0)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="holds no frames"):
        probe(tmp_path)


def test_mixed_frame_sizes(tmp_path: Path) -> None:
    Image.new("RGB", (60, 40)).save(tmp_path / "0.png")
    Image.new("RGB", (62, 40)).save(tmp_path / "1.png")
    with pytest.raises(VideoError, match=r"different sizes: 60x40 \(e.g. 0.png\); 62x40 \(e.g. 1.png\)"):
        probe(tmp_path)


# ----------------------------------------------------------------------------- bad inputs
def test_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is text, not a video\n" * 50)
    with pytest.raises(VideoError, match="cannot be read as a video"):
        probe(fake)


def test_truncated_file(vtest: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.avi"
    cut.write_bytes(vtest.read_bytes()[:4_000_000])
    with pytest.raises(VideoError, match="truncated"):
        probe(cut)


def test_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.avi"
    out = av.open(str(path), "w", format="avi")
    s = out.add_stream("mpeg4", rate=25)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    out.start_encoding()
    out.close()
    with pytest.raises(VideoError, match="contains zero frames"):
        probe(path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "clip.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(VideoError, match=r"unsupported extension '.gif'"):
        probe(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="does not exist"):
        probe(tmp_path / "nope.mp4")


def test_encode_rejects_mixed_sizes(tmp_path: Path) -> None:
    frames = [np.zeros((32, 32, 3), np.uint8), np.zeros((32, 34, 3), np.uint8)]
    with pytest.raises(VideoError, match="same size"):
        encode_video(frames, tmp_path / "x.mp4", 10)
    assert not (tmp_path / "x.mp4").exists()
    assert not list(tmp_path.glob("*.part*")), "a failed encode must not leave temp files"


def test_iterating_long_video_does_not_grow_memory(vtest: Path) -> None:
    """Peak RSS of a fresh process (the test run's own peak would hide any growth)."""
    script = (
        "import resource, sys\n"
        "from body4d.video import open_video\n"
        "it = iter(open_video(sys.argv[1]))\n"
        "for _ in range(100): next(it)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rest = sum(1 for _ in it)\n"
        "print(rest, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(vtest)], capture_output=True, text=True, check=True
    )
    rest, grown_mb = out.stdout.split()
    assert int(rest) == 695
    assert float(grown_mb) < 50, f"peak RSS grew by {float(grown_mb):.0f} MB while streaming 695 frames"


def test_backward_reading_matches_forward(make_video) -> None:
    path = make_video(n=40, height=48, width=64)
    forward = list(open_video(path))
    video = open_video(path)
    backward = [video.frame(i) for i in range(39, -1, -1)][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward, strict=True))
    # after reading backwards, forward reads still decode the right frames
    assert np.array_equal(video.frame(20), forward[20]) and np.array_equal(video.frame(21), forward[21])
