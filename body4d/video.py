"""Probe, decode and encode videos and frame folders (PyAV; no system ffmpeg needed).

Decoding is lazy: `open_video()` reads only the container index (packets, no pixels) and the
first frame; `Video.frame(i)` decodes forward from where the decoder is when no keyframe lies in
between, and otherwise seeks to the keyframe before frame ``i``; sequential access (iteration)
decodes each frame once, so memory does not grow with the video's length. `Video.frames_decoded`
counts every frame the codec decoded.

Frames come out as RGB ``uint8[H, W, 3]`` at native resolution with the container's rotation
metadata applied. With ``max_side`` set, frames whose longer side exceeds it are downscaled
(aspect kept, both sides rounded to even numbers) by the decoder's scaler.

Encoding writes H.264 (libx264, yuv420p, ``+faststart``) at the exact input frame rate; odd
frame sizes are padded by one replicated edge pixel because yuv420p needs even sizes.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import stat
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from PIL import Image, ImageOps

from body4d.errors import InputError
from body4d.types import VideoInfo

if TYPE_CHECKING:
    from body4d.config import Config

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Frame folders carry no timing; this rate is used unless the caller passes one.
DEFAULT_FOLDER_FPS = Fraction(30)
# Frames decoded past the target before giving up on a seek (broken timestamps).
_MAX_SEEK_DECODE = 10_000
# Reading backwards (SAM-3's backward pass, scrubbing left) would decode a whole GOP per frame.
# Instead a backward seek decodes a block of up to this many frames ending at the request and
# keeps them, bounded by REVERSE_CACHE_BYTES of RGB data (e.g. 64 frames at 720p, 42 at 1080p).
REVERSE_BLOCK_FRAMES = 64
REVERSE_CACHE_BYTES = 256 * 2**20
# Files whose last frames were decoded once, by (path, size, mtime): reopening them (the app
# reopens a session's video for every job) does not decode the last GOP again.
_TAIL_CHECKED: set[tuple[str, int, int]] = set()


class VideoError(InputError):
    """A video or frame folder that cannot be used; the message says why and what to do."""


def probe(path: str | Path, *, folder_fps: Fraction = DEFAULT_FOLDER_FPS, max_pixels: int = 0) -> VideoInfo:
    """Describe a video file or a frame folder, decoding only its first and last frames.

    A file's frames from its last keyframe on are decoded once, so that a file cut short (whose
    index still lists every frame, as a cut faststart mp4's does) is refused here.

    Args:
        path: video file (mp4/mov/avi/mkv/webm/m4v) or folder of jpg/jpeg/png/bmp frames.
        folder_fps: frame rate assigned to a frame folder.
        max_pixels: refuse frames of more pixels than this (``limits.max_frame_pixels``; 0 = no
            limit beyond PIL's own decompression-bomb check: twice its limit, 179 Mpx by default).

    Returns:
        `VideoInfo` with the exact fps, frame count and the displayed (rotated) size.

    Raises:
        VideoError: missing path, not a regular file, unsupported extension, unreadable or
            truncated file, no frames, frames too large.
    """
    return _open_source(Path(path), folder_fps, max_pixels, 0).info


def open_video(
    path: str | Path,
    *,
    max_frames: int = 0,
    max_side: int = 0,
    folder_fps: Fraction = DEFAULT_FOLDER_FPS,
    max_pixels: int = 0,
) -> Video:
    """Open a video or frame folder for lazy decoding.

    Args:
        path: video file or frame folder.
        max_frames: refuse inputs with more frames than this (0 = no limit), before decoding any.
        max_side: downscale frames whose longer side exceeds this many pixels (0 = native).
        folder_fps: frame rate assigned to a frame folder.
        max_pixels: as `probe`; reopening a video already checked needs no limit.

    Raises:
        VideoError: as `probe`, or the video is longer than ``max_frames``.
    """
    return Video(_open_source(Path(path), folder_fps, max_pixels, max_frames), max_side)


def folder_rate(cfg: Config) -> Fraction:
    """``video.folder_fps`` as the exact rate a frame folder gets (29.97 becomes 30000/1001)."""
    return Fraction(cfg.video.folder_fps).limit_denominator(1001)


def open_configured(path: str | Path, cfg: Config) -> Video:
    """`open_video` with the config's ``video.*`` settings and ``limits.max_frame_pixels``: how every
    entry point (``body4d run``, ``body4d batch``, the app) opens a user's video.

    Raises:
        VideoError: as `open_video`.
    """
    return open_video(
        path,
        max_frames=cfg.video.max_frames,
        max_side=cfg.video.max_side,
        folder_fps=folder_rate(cfg),
        max_pixels=cfg.limits.max_frame_pixels,
    )


class Video:
    """Lazily decoded frames of one video or frame folder.

    `frame(i)` gives random access; iteration streams frames in order.
    `info` describes the frames as delivered (after downscaling).
    """

    def __init__(self, source: _Source, max_side: int = 0) -> None:
        self._source = source
        src = source.info
        # The file's own frames (before ``max_side``), for the record.
        self.source_info = src
        self.size = _scaled_size(src.width, src.height, max_side)
        w, h = self.size
        self.info = VideoInfo(
            path=src.path,
            fps=src.fps,
            n_frames=src.n_frames,
            height=h,
            width=w,
            codec=src.codec,
            rotation=src.rotation,
        )
        if (w, h) != (src.width, src.height):
            log.info(
                "downscaling %s from %dx%d to %dx%d (video.max_side)", src.path, src.width, src.height, w, h
            )

    def __len__(self) -> int:
        return self.info.n_frames

    @property
    def frames_decoded(self) -> int:
        """Frames decoded to RGB since the video was opened (every seek and re-read counts)."""
        return self._source.decoded

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (reopened on the next access)."""
        self._source.close()

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as RGB ``uint8[H, W, 3]``.

        Raises:
            IndexError: index outside ``[0, len)``.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside the video (0..{len(self) - 1})")
        return self._source.frame(index, self.size)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._source.iterate(0, len(self), self.size)

    def iter_range(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Frames ``[start, stop)`` in order, each decoded once."""
        start, stop = max(0, start), min(len(self), stop)
        return self._source.iterate(start, stop, self.size)


def encode_video(
    frames: Iterable[np.ndarray],
    path: str | Path,
    fps: Fraction | float | int,
    *,
    crf: int = 18,
    preset: str = "veryfast",
) -> Path:
    """Encode RGB frames to a browser-playable H.264 mp4 (yuv420p, +faststart).

    Args:
        frames: RGB ``uint8[H, W, 3]`` frames, all the same size.
        path: output ``.mp4`` path; written to a temporary file and renamed into place.
        fps: exact frame rate (a Fraction keeps 30000/1001 exact).
        crf: x264 constant rate factor.
        preset: x264 speed preset (``video.preset``).

    Returns:
        ``path``.

    Raises:
        VideoError: no frames, or frames of different sizes or types.
    """
    with VideoWriter(path, fps, crf=crf, preset=preset) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


class VideoWriter:
    """A browser-playable H.264 mp4 (yuv420p, +faststart) written frame by frame; several can be
    open at once (one pass over the frames feeding many videos).

    Use as a context manager: the file appears under ``path`` (atomic rename) only when the block
    ends without error and at least one frame was written; otherwise nothing is left behind.

    Args:
        path: output ``.mp4`` path.
        fps: exact frame rate (a Fraction keeps 30000/1001 exact).
        crf: x264 constant rate factor.
        preset: x264 speed preset.

    Raises:
        VideoError: a non-positive frame rate.
    """

    def __init__(
        self, path: str | Path, fps: Fraction | float | int, *, crf: int = 18, preset: str = "veryfast"
    ) -> None:
        self.path = Path(path)
        self.rate = Fraction(fps).limit_denominator(1_000_000)
        if self.rate <= 0:
            raise VideoError(f"cannot encode at {fps} fps: the frame rate must be positive")
        self.crf = crf
        self.preset = preset
        self.count = 0
        self._shape: tuple[int, ...] | None = None
        self._out: Any = None
        self._stream: Any = None
        self._tmp: Path | None = None

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".part.mp4", dir=self.path.parent
        )
        os.close(fd)
        self._tmp = Path(tmp_name)
        self._out = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._out.add_stream("libx264", rate=self.rate)
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = 1 / self.rate
        self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB ``uint8[H, W, 3]`` frame (odd sizes are padded by one edge pixel)."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"frame {self.count} is {frame.dtype} {frame.shape}; expected RGB uint8 HxWx3")
        if self._shape is None:
            self._shape = frame.shape
            self._stream.height = frame.shape[0] + frame.shape[0] % 2
            self._stream.width = frame.shape[1] + frame.shape[1] % 2
        elif frame.shape != self._shape:
            raise VideoError(
                f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self._shape[1]}x{self._shape[0]}: all frames of one video must have the same size"
            )
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        import cv2  # here: `body4d version`/`probe` import this module and nothing heavy

        # BT.601 limited range, as libswscale converts rgb24 (within 3 levels), at a tenth of its time.
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        vf.pts = self.count
        self._out.mux(self._stream.encode(vf))
        self.count += 1

    def __exit__(self, exc_type: object, *exc: object) -> None:
        assert self._tmp is not None
        try:
            if exc_type is None and self.count:
                self._out.mux(self._stream.encode(None))
            self._out.close()
            if exc_type is None:
                if self.count == 0:
                    raise VideoError(f"no frames to encode into {self.path}")
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- sources


class _Source(ABC):
    """Where frames come from: a container file or a folder of images."""

    info: VideoInfo
    # Frames decoded to RGB so far (seeks and re-reads included): what a run really decodes.
    decoded: int = 0

    @abstractmethod
    def frame(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """Frame ``index`` as RGB ``uint8[h, w, 3]`` at ``size = (w, h)``."""

    @abstractmethod
    def iterate(self, start: int, stop: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Frames ``[start, stop)`` in order, each decoded once."""

    @abstractmethod
    def close(self) -> None:
        """Release decoder resources (reopened on the next access)."""


def _open_source(path: Path, folder_fps: Fraction, max_pixels: int, max_frames: int) -> _Source:
    """The source of ``path``; every limit is checked from headers and indexes before frames are decoded."""
    if not path.exists():
        raise VideoError(f"{path} does not exist: check the path of the video or frame folder")
    if max_pixels:
        # PIL's own decompression-bomb check follows the configured limit (it refuses images of
        # twice it when opening them, wherever they are opened; `open_image` makes that a VideoError).
        Image.MAX_IMAGE_PIXELS = max_pixels
    if path.is_dir():
        source: _Source = _FolderSource(path, Fraction(folder_fps), max_pixels, max_frames)
    else:
        check_regular_file(path, "video")
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise VideoError(
                f"{path.name} has the unsupported extension {path.suffix or '(none)'!r}: use a video "
                f"({', '.join(VIDEO_EXTENSIONS)}) or a folder of {', '.join(IMAGE_EXTENSIONS)} frames"
            )
        source = _FileSource(path, max_pixels, max_frames)
    return source


def check_regular_file(path: Path, what: str) -> None:
    """Refuse a folder, FIFO, device or socket (reading a FIFO blocks forever, a device never ends).

    Args:
        path: an existing path.
        what: what the file should be, for the message ("video", "mask", "prompts file").

    Raises:
        VideoError: ``path`` is not a regular file.
    """
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise VideoError(f"{path} is a folder: pass the {what} as a file")
    if not stat.S_ISREG(mode):
        raise VideoError(
            f"{path} is not a regular file (a pipe, device or socket): pass the {what} as an ordinary file"
        )


def _check_frame_count(path: Path, n_frames: int, max_frames: int) -> None:
    """Refuse a video of more than ``max_frames`` frames (0 = no limit); the message names video.max_frames."""
    if max_frames and n_frames > max_frames:
        raise VideoError(
            f"{path} has {n_frames} frames, more than video.max_frames={max_frames}: "
            f"trim the video or raise the limit with --set video.max_frames={n_frames}"
        )


def _check_frame_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    """Refuse frames of more than ``max_pixels`` pixels (0 = no limit); the message names limits.max_frame_pixels."""
    if max_pixels and width * height > max_pixels:
        raise VideoError(
            f"{path} has {width}x{height} frames ({width * height} pixels), more than "
            f"limits.max_frame_pixels={max_pixels}: downscale it (e.g. to 3840x2160) or raise the limit "
            f"with --set limits.max_frame_pixels={width * height}"
        )


def open_image(path: Path, max_pixels: int) -> Image.Image:
    """Open an image lazily (header only) and refuse it when it has more than ``max_pixels`` pixels.

    Args:
        path: the image file.
        max_pixels: the largest pixel count accepted (0 = no limit beyond PIL's own check).

    Returns:
        The opened image; nothing is decoded yet (close it, e.g. ``with open_image(...) as im``).

    Raises:
        VideoError: not a regular file, not a readable image, or too many pixels (PIL's
            decompression-bomb error included).
    """
    check_regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            # PIL warns above its limit (the check below says it with the image's size); it
            # refuses above twice its limit, before the size is known.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        limit = Image.MAX_IMAGE_PIXELS
        raise VideoError(
            f"{path} declares more than {2 * limit} pixels, twice the limit of {limit} "
            "(limits.max_frame_pixels): downscale it or raise the limit with --set limits.max_frame_pixels=..."
        ) from exc
    except OSError as exc:
        raise VideoError(f"{path} is not a readable image ({exc}): replace or remove it") from exc
    try:
        _check_frame_pixels(path, *im.size, max_pixels)
    except VideoError:
        im.close()
        raise
    return im


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class _FolderSource(_Source):
    def __init__(self, path: Path, fps: Fraction, max_pixels: int, max_frames: int) -> None:
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: natural_key(p.name),
        )
        if not files:
            raise VideoError(f"folder {path} holds no frames: put {', '.join(IMAGE_EXTENSIONS)} images in it")
        _check_frame_count(path, len(files), max_frames)
        sizes: dict[tuple[int, int], str] = {}
        codecs = set()
        for f in files:
            with open_image(f, max_pixels) as im:
                size = _oriented_size(im)
                codecs.add((im.format or f.suffix[1:]).lower())
            sizes.setdefault(size, f.name)
        if len(sizes) > 1:
            listed = "; ".join(f"{w}x{h} (e.g. {n})" for (w, h), n in sizes.items())
            raise VideoError(
                f"frames in {path} have different sizes: {listed}. Resize them to one size first"
            )
        ((w, h),) = sizes
        self.files = files
        self.info = VideoInfo(
            path=path, fps=fps, n_frames=len(files), height=h, width=w, codec="/".join(sorted(codecs))
        )

    def _load(self, index: int, size: tuple[int, int]) -> np.ndarray:
        self.decoded += 1
        with Image.open(self.files[index]) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            if im.size != size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            return np.asarray(im)

    def frame(self, index: int, size: tuple[int, int]) -> np.ndarray:
        return self._load(index, size)

    def close(self) -> None:
        """Images are opened per frame: nothing stays open."""

    def iterate(self, start: int, stop: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
        for i in range(start, stop):
            yield self._load(i, size)


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    orientation = im.getexif().get(0x0112, 1)
    w, h = im.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


class _FileSource(_Source):
    """A container file with a frame-index -> pts table built by demuxing (no decoding)."""

    def __init__(self, path: Path, max_pixels: int, max_frames: int) -> None:
        self.path = path
        self._container: av.container.InputContainer | None = None
        self._next_index = -1  # index of the frame the open decoder yields next
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._last_request = -1
        self._reverse_cache: dict[int, np.ndarray] = {}  # frames of the last backward block
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoError(
                f"{path} cannot be read as a video ({_reason(exc)}): it is not a video, is damaged, "
                "or uses an unknown container; re-export it as H.264 mp4"
            ) from exc
        try:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream: pick a file with video in it")
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not fps or fps <= 0:
                raise VideoError(f"{path} declares no frame rate: re-export it with a fixed frame rate")
            fps = Fraction(fps)
            declared = stream.frames
            pts: list[int] = []
            key_pts: list[int] = []
            try:
                for packet in container.demux(stream):
                    if packet.size and packet.pts is not None:
                        pts.append(int(packet.pts))
                    elif packet.size:
                        pts.append(len(pts))
                    if packet.size and packet.is_keyframe:
                        key_pts.append(pts[-1])
            except av.FFmpegError as exc:
                raise VideoError(
                    f"{path} is damaged after {len(pts)} frames ({_reason(exc)}): re-download or re-export it"
                ) from exc
            if not pts:
                raise VideoError(f"{path} contains zero frames: pick a video that has frames")
            if declared and len(pts) < declared:
                raise VideoError(
                    f"{path} is truncated: its header promises {declared} frames but only {len(pts)} "
                    "are present; re-download or re-export the file"
                )
            ctx = stream.codec_context
            width, height = ctx.width, ctx.height
            codec = ctx.name
            time_base = stream.time_base
        finally:
            container.close()
        _check_frame_count(path, len(pts), max_frames)
        _check_frame_pixels(path, width, height, max_pixels)
        self.pts = sorted(pts)
        # Frame indices where decoding can start (a seek lands on the last one at or before its target).
        self.keyframes = sorted({_bisect(self.pts, p) for p in key_pts} | {0})
        self.time_base = time_base
        self._first_frame = self._decode_first()
        self._check_tail()
        rotation = int(getattr(self._first_frame, "rotation", 0) or 0) % 360
        if rotation in (90, 270):
            width, height = height, width
        self.rotation = rotation
        self.info = VideoInfo(
            path=path,
            fps=fps,
            n_frames=len(self.pts),
            height=height,
            width=width,
            codec=codec,
            rotation=rotation,
        )

    def _decode_first(self) -> av.VideoFrame:
        try:
            with av.open(str(self.path)) as c:
                for frame in c.decode(video=0):
                    return frame
        except av.FFmpegError as exc:
            raise VideoError(
                f"{self.path} cannot be decoded ({_reason(exc)}): re-export it as H.264 mp4"
            ) from exc
        raise VideoError(f"{self.path} contains zero decodable frames: pick a video that has frames")

    def _check_tail(self) -> None:
        """Decode the frames from the last keyframe on (once per file version): a file cut inside
        its last frames, whose index still lists them all, is refused before any work.

        Raises:
            VideoError: fewer frames decode than the index lists, or the decoder fails.
        """
        st = self.path.stat()
        key = (str(self.path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _TAIL_CHECKED:
            return
        start = self.keyframes[-1]
        decoded = 0
        try:
            with av.open(str(self.path)) as c:
                stream = c.streams.video[0]
                if start > 0:
                    c.seek(self.pts[start], stream=stream, backward=True, any_frame=False)
                for frame in c.decode(stream):
                    # Leading frames of an open GOP come before the keyframe: not counted.
                    if frame.pts is None or frame.pts >= self.pts[start]:
                        decoded += 1
        except av.FFmpegError as exc:
            raise VideoError(
                f"{self.path} is damaged in its last frames ({_reason(exc)}): re-download or re-export it"
            ) from exc
        if start + decoded < len(self.pts):
            raise VideoError(
                f"{self.path} is truncated: its index lists {len(self.pts)} frames but only "
                f"{start + decoded} decode; re-download or re-export the file"
            )
        _TAIL_CHECKED.add(key)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._decoder = None
        self._next_index = -1
        self._reverse_cache = {}

    def _to_rgb(self, frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        if self.rotation in (90, 270):
            w, h = h, w
        if (frame.width, frame.height) != (w, h):
            frame = frame.reformat(width=w, height=h, interpolation="AREA")
        rgb = frame.to_ndarray(format="rgb24")
        if self.rotation:
            # Display matrix rotation is counter-clockwise in FFmpeg's convention.
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rotation // 90))
        return rgb

    def _seek_to(self, index: int) -> None:
        self.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        if index > 0:
            self._container.seek(self.pts[index], stream=stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(stream)
        self._next_index = -1 if index > 0 else 0
        self._target = index

    def frame(self, index: int, size: tuple[int, int]) -> np.ndarray:
        backward = index < self._last_request
        self._last_request = index
        cached = self._reverse_cache.get(index)
        if cached is not None and cached.shape[1::-1] == size:
            return cached
        if index != self._next_index or self._decoder is None:
            if not backward:
                if not self._can_decode_forward_to(index):
                    self._seek_to(index)
            else:
                # Decode the block [start, index] once and keep it: the following backward
                # requests are then served from memory instead of one GOP decode each.
                block = max(1, min(REVERSE_BLOCK_FRAMES, REVERSE_CACHE_BYTES // (3 * size[0] * size[1])))
                start = max(0, index - block + 1)
                self._seek_to(start)
                self._reverse_cache = {
                    j: self._to_rgb(self._advance_to(j), size) for j in range(start, index)
                }
        return self._to_rgb(self._advance_to(index), size)

    def _can_decode_forward_to(self, index: int) -> bool:
        """The open decoder reaches ``index`` with fewer decodes than a seek: no keyframe lies
        between its position and ``index`` (a seek would restart from an earlier keyframe)."""
        if self._decoder is None or self._next_index < 0 or index < self._next_index:
            return False
        return bisect.bisect_right(self.keyframes, index) == bisect.bisect_right(
            self.keyframes, self._next_index
        )

    def _advance_to(self, index: int) -> av.VideoFrame:
        assert self._decoder is not None
        target_pts = self.pts[index]
        skipped = 0
        try:
            for frame in self._decoder:
                self.decoded += 1
                if self._next_index >= 0:
                    current = self._next_index
                else:
                    # After a seek, position is known from the pts of the decoded frame.
                    if frame.pts is None:
                        raise VideoError(f"{self.path} has frames without timestamps: re-export it")
                    current = _bisect(self.pts, int(frame.pts))
                self._next_index = current + 1
                if current == index or (frame.pts is not None and frame.pts >= target_pts):
                    return frame
                skipped += 1
                if skipped > _MAX_SEEK_DECODE:
                    break
        except av.FFmpegError as exc:
            raise VideoError(
                f"{self.path} is damaged near frame {index} ({_reason(exc)}): re-export it"
            ) from exc
        self.close()
        raise VideoError(f"{self.path}: frame {index} could not be decoded; the file may be truncated")

    def iterate(self, start: int, stop: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
        for i in range(start, stop):
            yield self.frame(i, size)


def _bisect(sorted_pts: list[int], value: int) -> int:
    i = bisect.bisect_left(sorted_pts, value)
    return min(i, len(sorted_pts) - 1)


def _scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    even = lambda v: max(2, int(round(v * scale / 2)) * 2)  # noqa: E731
    return even(width), even(height)


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
