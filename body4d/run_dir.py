"""The only owner of ``outputs/<run_id>/``: every path, atomic saves, the manifest, stage artefacts.

Layout (the README's "Outputs" lists what each holds)::

    manifest.json  images/  masks/  masks_vis/  video_mask_<run_id>.mp4  segmentation.json
    camera.json  bodies_raw.npz  completion/<id>/images|masks/  completion.json  bodies_completed.npz
    bodies.npz  mesh_4d_individual/<id>/  focal_4d_individual/<id>/  4d_<run_id>.mp4
    4d_individual/  rendered_frames/  rendered_frames_individual/<id>/  people/<id>/  4d_<run_id>.glb
    input_preview.mp4  body4d_<run_id>.zip

Every name above is a constant or method of `RunDir`; no other module spells one out. Each stage
result has a typed ``save_*``/``load_*`` pair here. Every file is written to a temporary name in
its folder and renamed into place, so a crash never leaves a half-written file under its final
name. ``manifest.json`` has one writer per section: ``video`` (`set_video`), ``checkpoints``
(`set_checkpoints`), ``stages`` (`stage`, `invalidate`, `save_mask_repair`) and ``artefacts``
(`record_artefacts`). A stage's artefacts are removed (`clear`) before it runs again, so a re-run
never leaves files of frames or people that are gone; a stage that redoes only the people a mask
repair changed removes just their files (`clear_people`). ``.scratch/`` holds run-time temporaries (e.g. a memory-mapped
label volume); it and the ``.part`` files of a killed process are removed when the run folder is
opened to resume it.

The ``video`` section holds a fingerprint of the input (`input_fingerprint`): a resume with another
video is refused before anything is written (`bind_input`). Every finished stage records the
identity of what it read (``inputs``: the input's fingerprint, earlier stages' ``output``) and a
new ``output`` identity of its own, so that a changed input re-runs exactly the stages that read
it. ``.reserve`` is a small file deleted to make room for the manifest when the disk fills up, so
that the manifest can still record which stage failed (`DiskFullError`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from body4d import masks as masklib
from body4d.errors import InputError
from body4d.overlap import OrderedWriter
from body4d.types import (
    BodyTrack,
    CompletedFrame,
    Completion,
    Intrinsics,
    MaskTrack,
    PersonBundle,
    Segmentation,
    VideoInfo,
)
from body4d.video import Video, VideoWriter, encode_video
from models.frames import FrameSource

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# A later stage's manifest field: how many mask repairs the masks it last ran on had.
MASKS_REVISION = "masks_revision"
RUN_ID_RE = re.compile(r"^\d{8}_\d{6}_\d{3}_[0-9a-f]{8}$")
FRAME_NAME = "{:08d}"
# zlib level of RGB PNGs (masks_vis/): level 1 is 4x faster than PIL's default 6 for ~8 % more bytes.
PNG_COMPRESS_LEVEL = 1
# Label volumes larger than this (70 frames at 1280x720) are memory-mapped from .scratch/
# (`body4d.masks.LabelVolume`, whose resident share stays a few frames) instead of held in RAM,
# so that memory does not grow with the video's length (benchmarks/README.md, long videos).
LABELS_IN_MEMORY_MAX_BYTES = 64 << 20
# Most threads encoding images/, masks/ and masks_vis/ beside the overlay video encoder.
MAX_SAVE_WORKERS = 4
_VERSIONED = ("body4d", "torch", "torchvision", "transformers", "diffusers", "gradio", "av", "numpy")
# The reserve file: deleted when the disk is full so that the manifest can still be rewritten.
# Why a reserve rather than pre-allocating the manifest: the manifest is saved atomically (a new
# file renamed over the old), so it needs fresh blocks on every save, and it grows with mask
# repairs. 256 KiB holds a manifest with hundreds of repairs (one is ~200 bytes) several times.
RESERVE = ".reserve"
RESERVE_BYTES = 256 << 10
# errno values meaning "the disk (or the user's quota) is full" and "this folder cannot be written".
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
# Decoded frames hashed into the input fingerprint: the first, middle and last (cheap, and a
# different video of the same length and size differs in them).
FINGERPRINT_FRAMES = 3
# Temporary files of the atomic writers (`atomic_write_bytes`, `atomic_path`, `VideoWriter`):
# ``.<name>.<random>.part`` and ``.<name>.<random>.part.mp4``.
_PART_GLOBS = (".*.part", ".*.part.mp4")


class RunDirError(InputError):
    """A run folder that cannot be created, opened or written; the message says why."""


class DiskFullError(RunDirError):
    """The disk (or quota) holding a run folder is full; the message names the folder, the free
    space, what the failed write needed (when known) and the fix.

    Args:
        folder: where the write failed.
        needed: bytes the failed write needed, if known.
        run_id: the run to resume once there is space (named in the fix).
    """

    def __init__(self, folder: Path, needed: int | None = None, run_id: str | None = None) -> None:
        self.folder = folder
        self.needed = needed
        try:
            free = f"{_megabytes(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = "free space unknown"
        need = f", the write needed {_megabytes(needed)}" if needed else ""
        then = f", then resume with body4d run --resume {run_id}" if run_id else ""
        super().__init__(
            f"the disk holding {folder} is full ({free}{need}): free some space or set "
            f"runtime.output_dir to a bigger disk{then}"
        )


def disk_full(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, its cause or context) that says the disk or quota
    is full (a `DiskFullError` or an OSError ENOSPC/EDQUOT), else None."""
    for e in _chain(exc):
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in _DISK_FULL):
            return e
    return None


def _read_only(exc: BaseException) -> OSError | None:
    """The OSError in ``exc``'s chain saying the folder cannot be written (read-only, no permission)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
            return e
    return None


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def _not_writable(folder: Path, reason: str, run_id: str | None) -> RunDirError:
    """The error of a run folder that cannot be written (``reason``: the system's words)."""
    where = f"run {run_id} in {folder}" if run_id else str(folder)
    return RunDirError(
        f"cannot write to {where} ({reason}): a read-only disk or folder; copy the run "
        "folder to a writable disk and resume it there (body4d run --resume ID --output_dir "
        "THAT_PARENT_FOLDER), or make the folder writable"
    )


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYMMDD_HHMMSS_mmm_<8 hex>`` (UTC time + random suffix: unique and sortable)."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d_%H%M%S}_{now.microsecond // 1000:03d}_{secrets.token_hex(4)}"


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a well-formed run id, else raise `RunDirError` (no path traversal)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise RunDirError(
            f"{run_id!r} is not a run id: expected YYYYMMDD_HHMMSS_mmm_<8 hex>, "
            "e.g. 20261123_213400_123_0a1b2c3d (see the folder names under outputs/)"
        )
    return run_id


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        if disk_full(exc):
            raise DiskFullError(path.parent, len(data)) from exc
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if disk_full(exc):
            raise DiskFullError(path.parent, len(data)) from exc
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write (e.g. a streamed download); it is renamed to
    ``path`` when the block ends without error, and removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# Fingerprints of opened videos: computed once per `Video` (a resume checks, then records it).
_FINGERPRINTS: weakref.WeakKeyDictionary[Video, dict[str, Any]] = weakref.WeakKeyDictionary()


def input_fingerprint(video: Video) -> dict[str, Any]:
    """What tells one input from another, cheaply: its size in bytes, frame count, frame sizes
    (as delivered and in the file) and the SHA-256 of a few decoded frames (first, middle, last).

    Args:
        video: the opened input (a file or a frame folder).

    Returns:
        ``{"file_size", "n_frames", "width", "height", "source_width", "source_height",
        "frames_sha256": {"<index>": hex}}`` (JSON-ready); computed once per `Video`.
    """
    cached = _FINGERPRINTS.get(video)
    if cached is not None:
        return cached
    info, n = video.info, len(video)
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, FINGERPRINT_FRAMES)}) if n else []
    cached = {
        "file_size": _input_bytes(Path(info.path)),
        "n_frames": n,
        "width": info.width,
        "height": info.height,
        "source_width": video.source_info.width,
        "source_height": video.source_info.height,
        "frames_sha256": {
            str(i): hashlib.sha256(np.ascontiguousarray(video.frame(i)).tobytes()).hexdigest() for i in picks
        },
    }
    _FINGERPRINTS[video] = cached
    return cached


def _input_bytes(path: Path) -> int:
    """The size of a video file, or the total size of the files of a frame folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def _fingerprint_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints (only the fields ``recorded`` has), as phrases."""
    out = []
    if "n_frames" in recorded and recorded["n_frames"] != current["n_frames"]:
        out.append(f"{recorded['n_frames']} frames, now {current['n_frames']}")
    for prefix, what in (("source_", "frame size in the file"), ("", "frame size as processed")):
        w, h = recorded.get(f"{prefix}width"), recorded.get(f"{prefix}height")
        if w is not None and (w, h) != (current[f"{prefix}width"], current[f"{prefix}height"]):
            out.append(f"{what} {w}x{h}, now {current[f'{prefix}width']}x{current[f'{prefix}height']}")
    if len(out) == 1 and out[0].startswith("frame size as processed"):
        out[0] += " (video.max_side differs from the run's)"
    same_shape = not out
    if "file_size" in recorded and recorded["file_size"] != current["file_size"]:
        out.append(f"file size {recorded['file_size']} bytes, now {current['file_size']} bytes")
    frames = recorded.get("frames_sha256") or {}
    changed = [i for i, digest in frames.items() if current["frames_sha256"].get(i) != digest]
    if changed and same_shape:  # frames of other sizes differ anyway: not worth saying
        out.append(f"frame{'s' if len(changed) > 1 else ''} {', '.join(changed)} show other pictures")
    return out


def frame_file(index: int, suffix: str) -> str:
    """``00000042.png``: the name of frame ``index`` in every per-frame folder."""
    return FRAME_NAME.format(index) + suffix


class RunDir:
    """One run folder; all writes under it go through this object (thread-safe manifest).

    Args:
        root: the folder.
        manifest: its parsed manifest.
        jpeg_quality: quality of the JPEGs (``video.jpeg_quality``).
        crf: H.264 quality of the run's videos (``video.crf``).
        preset: x264 speed preset of the run's videos (``video.preset``).
        frame_images: the masks stage writes ``images/`` (``outputs.frame_images``).
        mask_images: the masks stage writes ``masks_vis/`` (``outputs.mask_images``).
    """

    # ---------------------------------------------------------------- the schema
    IMAGES = "images"
    MASKS = "masks"
    MASKS_VIS = "masks_vis"
    MASK_VIDEO = "video_mask_{run_id}.mp4"
    SEGMENTATION = "segmentation.json"
    CAMERA = "camera.json"
    BODIES_RAW = "bodies_raw.npz"
    COMPLETION = "completion"
    COMPLETION_REPORT = "completion.json"
    BODIES_COMPLETED = "bodies_completed.npz"
    BODIES = "bodies.npz"
    MESHES = "mesh_4d_individual"
    FOCALS = "focal_4d_individual"
    RESULT_VIDEO = "4d_{run_id}.mp4"
    INDIVIDUAL_VIDEOS = "4d_individual"
    RENDERED_FRAMES = "rendered_frames"
    RENDERED_INDIVIDUAL = "rendered_frames_individual"
    PEOPLE = "people"
    SCENE_GLB = "4d_{run_id}.glb"
    PREVIEW = "input_preview.mp4"
    ZIP = "body4d_{run_id}.zip"
    SCRATCH = ".scratch"

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        *,
        jpeg_quality: int,
        crf: int,
        preset: str,
        frame_images: bool,
        mask_images: bool,
    ) -> None:
        self.root = root
        self.run_id = root.name
        self.jpeg_quality = jpeg_quality
        self.crf = crf
        self.preset = preset
        self.frame_images = frame_images
        self.mask_images = mask_images
        self._manifest = manifest
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls,
        output_dir: str | Path,
        config: Any,
        input_path: str | Path | None = None,
        run_id: str | None = None,
    ) -> RunDir:
        """Create a new run folder under ``output_dir`` and write its manifest.

        Args:
            output_dir: parent folder (created if missing).
            config: the `body4d.config.Config`, snapshotted in the manifest; its ``video``
                section sets the image and video quality, its ``outputs`` section the optional
                image folders.
            input_path: the input video or frame folder, recorded in the manifest.
            run_id: explicit id (validated); default a new one.
        """
        output_dir = Path(output_dir)
        run_id = validate_run_id(run_id) if run_id else new_run_id()
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            root = output_dir / run_id
            root.mkdir(exist_ok=False)
        except FileExistsError as exc:
            raise RunDirError(f"run folder {output_dir / run_id} already exists: open it to resume") from exc
        except OSError as exc:
            raise RunDirError(
                f"cannot create a run folder under {output_dir} ({exc.strerror}): "
                "set runtime.output_dir (or BODY4D_OUTPUT_DIR) to a writable folder"
            ) from exc
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "run_id": run_id,
            "created": _now(),
            "input": str(Path(input_path).resolve()) if input_path else None,
            "video": None,
            "config": config.to_dict(),
            "versions": _versions(),
            "stages": {},
            "artefacts": {},
        }
        run = cls(root, manifest, **_writer_options(config))
        run._save_manifest()
        run._make_reserve()
        log.info("run folder %s", root)
        return run

    @classmethod
    def open(
        cls,
        output_dir: str | Path,
        run_id: str,
        config: Any,
        *,
        clean_scratch: bool = True,
        video: Video | None = None,
    ) -> RunDir:
        """Open an existing run folder (to resume it or read its results).

        Args:
            output_dir: parent folder.
            run_id: the run folder's name (validated).
            config: the `body4d.config.Config` in force (its ``video`` and ``outputs`` sections
                set the quality and the optional image folders of what is written from now on).
            clean_scratch: resume: remove what a killed process left (``.scratch/``, ``.part``
                files) and make sure the disk-full reserve exists; False when a run of this
                process may be using the folder (the app lists and reopens runs meanwhile).
            video: the input to resume with: refused (`check_input`) before anything is written
                when it is not the video the run was made from.

        Raises:
            RunDirError: no such run, a damaged manifest, another video, or a folder that cannot
                be written (the message names the file and the fix).
        """
        root = Path(output_dir) / validate_run_id(run_id)
        path = root / MANIFEST
        if not path.is_file():
            raise RunDirError(f"no run {run_id} under {output_dir}: {path} is missing")
        run = cls(root, _read_manifest(path), **_writer_options(config))
        if video is not None:
            run.check_input(video)
        if clean_scratch:
            if not os.access(root, os.W_OK):  # refused now, not after the models are loaded
                raise _not_writable(root, "no write access", run_id)
            run._clean_leftovers()
            run._make_reserve()
        return run

    def check_input(self, video: Video) -> None:
        """Refuse ``video`` if it is not the input this run was made from (nothing is written).

        Compares `input_fingerprint` with the recorded one; a run folder without one (made before
        fingerprints) is compared on the frame count and sizes of its ``video`` section.

        Raises:
            RunDirError: another video; the message says which run, which video it was made
                from, what differs and the fix.
        """
        with self._lock:
            recorded = dict(self._manifest.get("video") or {})
        recorded = recorded.get("fingerprint") or {
            key: recorded[key]
            for key in ("n_frames", "width", "height", "source_width", "source_height")
            if key in recorded
        }
        if not recorded:
            return
        differences = _fingerprint_differences(recorded, input_fingerprint(video))
        if differences:
            path = video.info.path
            raise RunDirError(
                f"run {self.run_id} was made from {self._manifest.get('input') or 'another video'}, "
                f"and {path} is not that video ({'; '.join(differences)}): resume it with the video it "
                f"was made from, or start a new run for {path} (body4d run --input_video {path} "
                "without --resume)"
            )

    def bind_input(self, video: Video) -> None:
        """`check_input`, then record the input's fingerprint and the ``video`` section (once)."""
        self.check_input(video)
        section = _video_section(video.info, video.source_info, input_fingerprint(video))
        with self._lock:
            if self._manifest.get("video") != section:
                self._manifest["video"] = section
                self._save_manifest()

    def input_identity(self) -> str | None:
        """A short hash of the recorded input fingerprint (what a stage that read the video records)."""
        with self._lock:
            fingerprint = (self._manifest.get("video") or {}).get("fingerprint")
        if fingerprint is None:
            return None
        return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    def _clean_leftovers(self) -> None:
        """Remove ``.scratch/`` and the atomic writers' ``.part`` files: only a killed process
        leaves them, and this folder's run is being resumed by this one."""
        shutil.rmtree(self.path(self.SCRATCH), ignore_errors=True)
        parts = [p for pattern in _PART_GLOBS for p in self.root.rglob(pattern) if p.is_file()]
        for part in parts:
            part.unlink(missing_ok=True)
        if parts:
            log.info("removed %d unfinished file(s) of a killed run from %s", len(parts), self.root)

    def _make_reserve(self) -> None:
        """Write ``.reserve`` (`RESERVE_BYTES`) unless it exists: refuses a full or read-only
        folder now, before a stage starts."""
        path = self.root / RESERVE
        if path.is_file() and path.stat().st_size >= RESERVE_BYTES:
            return
        try:
            atomic_write_bytes(path, bytes(RESERVE_BYTES))
        except DiskFullError as exc:
            raise DiskFullError(self.root, RESERVE_BYTES, self.run_id) from exc
        except OSError as exc:
            if (cause := _read_only(exc)) is not None:
                raise _not_writable(self.root, cause.strerror or str(cause), self.run_id) from exc
            raise

    def _release_reserve(self) -> bool:
        """Delete ``.reserve`` to make room (True if there was one)."""
        try:
            (self.root / RESERVE).unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full under %s: used the reserve to save the manifest", self.root)
        return True

    # ------------------------------------------------------------------ paths
    def path(self, rel: str | Path) -> Path:
        """Absolute path of ``rel`` inside the run folder (refuses escapes such as ``..``).

        ``{run_id}`` in ``rel`` is replaced by this run's id (see `MASK_VIDEO`, `ZIP`).
        """
        rel = Path(str(rel).format(run_id=self.run_id))
        if rel.is_absolute() or ".." in rel.parts:
            raise RunDirError(f"{rel} is not a relative path inside the run folder")
        return self.root / rel

    def image_path(self, index: int) -> Path:
        """``images/<index>.jpg``: the decoded frame."""
        return self.path(Path(self.IMAGES) / frame_file(index, ".jpg"))

    def mask_path(self, index: int) -> Path:
        """``masks/<index>.png``: palette PNG, pixel = object id."""
        return self.path(Path(self.MASKS) / frame_file(index, ".png"))

    def mesh_path(self, obj_id: int, index: int) -> Path:
        """``mesh_4d_individual/<id>/<index>.obj``."""
        return self.path(Path(self.MESHES) / str(obj_id) / frame_file(index, ".obj"))

    def focal_path(self, obj_id: int, index: int) -> Path:
        """``focal_4d_individual/<id>/<index>.json``."""
        return self.path(Path(self.FOCALS) / str(obj_id) / frame_file(index, ".json"))

    @property
    def scratch(self) -> Path:
        """``.scratch/``: temporaries of this process (created on demand, emptied on reopen)."""
        folder = self.path(self.SCRATCH)
        folder.mkdir(exist_ok=True)
        return folder

    def rel(self, path: Path) -> str:
        """``path`` relative to the run folder, POSIX style."""
        return path.relative_to(self.root).as_posix()

    # ------------------------------------------------------------------ writers
    def write_bytes(self, rel: str | Path, data: bytes) -> Path:
        """Write ``data`` atomically to ``rel`` (relative, or an absolute path inside the run folder)."""
        target = rel if isinstance(rel, Path) and rel.is_absolute() else self.path(rel)
        self._check_inside(target)
        return atomic_write_bytes(target, data)

    def atomic_file(self, rel: str | Path) -> contextlib.AbstractContextManager[Path]:
        """`atomic_path` for ``rel`` in the run folder (e.g. a streamed zip)."""
        return atomic_path(self.path(rel))

    def write_json(self, rel: str | Path, obj: Any) -> Path:
        return self.write_bytes(
            rel, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode("utf-8")
        )

    def write_npz(self, rel: str | Path, **arrays: Any) -> Path:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return self.write_bytes(rel, buf.getvalue())

    def write_image(self, rel: str | Path, rgb: np.ndarray) -> Path:
        """JPEG (``.jpg``, at ``jpeg_quality``) or PNG (``.png``) of an RGB ``uint8[H, W, 3]`` image."""
        suffix = Path(str(rel)).suffix.lower()
        buf = io.BytesIO()
        img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
        if suffix in (".jpg", ".jpeg"):
            img.save(buf, format="JPEG", quality=self.jpeg_quality)
        elif suffix == ".png":
            img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        else:
            raise RunDirError(f"unsupported image type {suffix!r}: use .jpg or .png")
        return self.write_bytes(rel, buf.getvalue())

    def write_video(
        self, rel: str, frames: Iterable[np.ndarray], fps: Fraction | float, crf: int | None = None
    ) -> Path:
        """Encode an H.264 mp4 ``rel`` (atomic) at the run's ``crf`` unless given."""
        crf = self.crf if crf is None else crf
        return encode_video(frames, self.path(rel), fps, crf=crf, preset=self.preset)

    def _check_inside(self, target: Path) -> None:
        if self.root not in target.parents:
            raise RunDirError(f"{target} is not inside the run folder {self.root}")

    # ------------------------------------------------------------------ masks stage
    def save_masks(
        self,
        seg: Segmentation,
        frames: FrameSource,
        fps: Fraction,
        on_frame: Callable[[int, int], None] | None = None,
    ) -> None:
        """Save a segmentation: ``masks/`` (palette PNG, value = id), ``images/`` (the frames; with
        ``frame_images``), ``masks_vis/`` (with ``mask_images``), the overlay video and
        ``segmentation.json``; ``on_frame(done, total)`` after each frame (it may raise to stop,
        e.g. `body4d.jobs.Cancelled`)."""
        self._write_mask_frames(
            seg.track,
            frames,
            fps,
            range(seg.track.n_frames),
            images=self.frame_images,
            vis=self.mask_images,
            on_frame=on_frame,
        )
        self._write_segmentation(seg)

    def save_mask_repair(
        self,
        seg: Segmentation,
        record: dict[str, Any],
        frames: FrameSource,
        fps: Fraction,
        stale: Iterable[str],
    ) -> None:
        """Save a repaired segmentation (`body4d.stages.repair`): the manifest first, then the files.

        The masks stage's manifest entry gets ``record`` appended to its ``repairs`` list (the
        masks revision is the length of that list) and the new ``obj_ids``; the finished ``stale``
        stages are marked stale with their masks revision kept, so that they may redo only the
        person-frames the repairs changed (`mask_changes_since`). Then ``masks/`` (and
        ``masks_vis/`` when the run has it) of the frames in ``record["changed"]`` are rewritten
        (each file atomically), ``segmentation.json`` and the overlay video (re-encoded whole).
        Recording first means that a crash while writing leaves stages that redo the changed
        person-frames from whatever masks are on disk, never stages that trust masks they did not
        see.

        Args:
            seg: the segmentation with the repaired label maps.
            record: ``{"target", "new", "frames": [first, last], "changed": {id: [[a, b], ...]}}``
                (inclusive runs of frames per id, as `frame_runs` makes them).
            frames: the video (the overlay video draws on every frame).
            fps: its frame rate.
            stale: stages that read the masks (directly or through other stages).
        """
        rewrite = {f for runs in record["changed"].values() for f in expand_runs(runs)}
        with self._lock:
            entry = self._manifest["stages"]["masks"]
            entry.setdefault("repairs", []).append(record)
            entry["obj_ids"] = list(seg.track.obj_ids)
            entry["output"] = secrets.token_hex(8)  # the masks changed: their readers run again
            self.invalidate(*stale, changes_known=True)
            self._save_manifest()
        vis = self.path(self.MASKS_VIS).is_dir()  # kept in step where the masks stage wrote it
        self._write_mask_frames(seg.track, frames, fps, rewrite, images=False, vis=vis)
        self._write_segmentation(seg)

    def masks_revision(self) -> int:
        """How many repairs the masks have had since they were made (0 for fresh masks)."""
        with self._lock:
            return len(self._manifest["stages"].get("masks", {}).get("repairs", []))

    def mask_changes_since(self, revision: int) -> dict[int, frozenset[int]]:
        """``{obj_id: frames}`` whose mask changed in the repairs after masks revision ``revision``."""
        with self._lock:
            repairs = self._manifest["stages"].get("masks", {}).get("repairs", [])[revision:]
        changes: dict[int, set[int]] = {}
        for record in repairs:
            for obj_id, runs in record["changed"].items():
                changes.setdefault(int(obj_id), set()).update(expand_runs(runs))
        return {obj_id: frozenset(frames) for obj_id, frames in sorted(changes.items())}

    def _write_mask_frames(
        self,
        track: MaskTrack,
        frames: FrameSource,
        fps: Fraction,
        rewrite: Container[int],
        *,
        images: bool,
        vis: bool,
        on_frame: Callable[[int, int], None] | None = None,
    ) -> None:
        """``masks/`` (and ``images/`` with ``images``, ``masks_vis/`` with ``vis``) of the frames
        in ``rewrite``, and the overlay video of every frame.

        Frames are read once, in order; images are encoded on worker threads (PIL releases the
        GIL) beside the video encoder, a few frames in flight at most.
        """
        workers = max(1, min(MAX_SAVE_WORKERS, os.cpu_count() or 1))

        def save(i: int, rgb: np.ndarray, labels: np.ndarray) -> None:
            if images:
                self.write_image(self.image_path(i), rgb)
            self.write_bytes(self.mask_path(i), masklib.encode_palette_png(labels))
            if vis:
                self.write_image(
                    Path(self.MASKS_VIS) / frame_file(i, ".png"), masklib.visualise_masks(rgb, labels)
                )

        def overlays(pool: ThreadPoolExecutor) -> Iterator[np.ndarray]:
            pending: deque[Future[None]] = deque()
            for i in range(track.n_frames):
                rgb = frames.frame(i)
                labels = np.asarray(track.labels[i])
                if i in rewrite:
                    pending.append(pool.submit(save, i, rgb, labels))
                while len(pending) > 2 * workers:
                    pending.popleft().result()
                yield masklib.overlay(rgb, labels)
                if on_frame is not None:
                    on_frame(i + 1, track.n_frames)
            while pending:
                pending.popleft().result()

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="body4d-save") as pool:
            self.write_video(self.MASK_VIDEO, overlays(pool), fps)

    def _write_segmentation(self, seg: Segmentation) -> None:
        self.write_json(
            self.SEGMENTATION,
            {
                "obj_ids": list(seg.track.obj_ids),
                "first_frames": {str(k): v for k, v in seg.first_frames.items()},
                "mode": seg.mode,
            },
        )

    def load_masks(self) -> Segmentation:
        """The saved segmentation (label maps read back from ``masks/``)."""
        info = json.loads(self.path(self.SEGMENTATION).read_text(encoding="utf-8"))
        n, height, width = self._video_shape()
        labels = self.label_volume(n, height, width)
        for i in range(n):
            path = self.mask_path(i)
            if not path.is_file():
                raise RunDirError(
                    f"{path} is missing: the masks of run {self.run_id} are incomplete; make them "
                    f"again with body4d run --resume {self.run_id} --force (with the --prompts or "
                    "--masks they were made from), or start a new run"
                )
            labels[i] = masklib.read_palette_png(path)
        track = MaskTrack(obj_ids=tuple(int(i) for i in info["obj_ids"]), labels=labels)
        first = {int(k): int(v) for k, v in info["first_frames"].items()}
        return Segmentation(track, first, info["mode"])

    def label_volume(self, n: int, height: int, width: int) -> np.ndarray:
        """``uint8[n, H, W]`` zeros: in RAM when small, else memory-mapped from ``.scratch/``."""
        return masklib.label_volume(n, height, width, self.scratch, LABELS_IN_MEMORY_MAX_BYTES)

    def mask_video_path(self) -> Path | None:
        """The overlay video of the masks, if it was written."""
        path = self.path(self.MASK_VIDEO)
        return path if path.is_file() else None

    # ------------------------------------------------------------------ camera stage
    def save_camera(self, K: Intrinsics) -> None:
        """``camera.json``: K (pixels), image size and how K was obtained."""
        self.write_json(
            self.CAMERA,
            {"K": np.asarray(K.K).tolist(), "width": K.width, "height": K.height, "source": K.source},
        )

    def load_camera(self) -> Intrinsics:
        d = json.loads(self.path(self.CAMERA).read_text(encoding="utf-8"))
        return Intrinsics(
            K=np.asarray(d["K"], dtype=np.float64), width=d["width"], height=d["height"], source=d["source"]
        )

    # ------------------------------------------------------------------ recover / smooth stages
    def save_tracks(self, rel: str, tracks: dict[int, BodyTrack]) -> None:
        """``bodies_raw.npz``, ``bodies_completed.npz`` or ``bodies.npz``: per id (keys ``id<k>/<field>``) every `BodyTrack` array."""
        self.write_npz(rel, **bodies_arrays({i: t.arrays() for i, t in tracks.items()}))

    def load_tracks(self, rel: str) -> dict[int, BodyTrack]:
        """The tracks saved by `save_tracks` (exactly the `BodyTrack` fields; nothing else)."""
        names = [n for n in BodyTrack.__dataclass_fields__ if n != "obj_id"]
        with np.load(self.path(rel)) as data:
            return {
                int(obj_id): BodyTrack(obj_id=int(obj_id), **{n: data[f"id{int(obj_id)}/{n}"] for n in names})
                for obj_id in data["obj_ids"]
            }

    # ------------------------------------------------------------------ complete stage
    def completion_image_path(self, obj_id: int, index: int) -> Path:
        return self.path(self.COMPLETION) / str(obj_id) / "images" / frame_file(index, ".jpg")

    def completion_mask_path(self, obj_id: int, index: int) -> Path:
        return self.path(self.COMPLETION) / str(obj_id) / "masks" / frame_file(index, ".png")

    def save_completion(self, completion: Completion) -> None:
        """``completion/<id>/images/<frame>.jpg`` (the completed person on white) and
        ``masks/<frame>.png`` (amodal mask, palette, pixel = id) per completed person-frame, then
        ``completion.json`` (the work report and the list of completed person-frames)."""
        for item in completion.frames:
            self.write_bytes(self.completion_image_path(item.obj_id, item.frame), item.image)
            self.write_bytes(self.completion_mask_path(item.obj_id, item.frame), item.mask)
        frames = [[item.obj_id, item.frame] for item in completion.frames]
        self.write_json(self.COMPLETION_REPORT, {"report": completion.report, "frames": frames})

    def load_completion(self) -> Completion:
        d = json.loads(self.path(self.COMPLETION_REPORT).read_text(encoding="utf-8"))
        items = tuple(
            CompletedFrame(
                obj_id,
                frame,
                self.completion_image_path(obj_id, frame).read_bytes(),
                self.completion_mask_path(obj_id, frame).read_bytes(),
            )
            for obj_id, frame in d["frames"]
        )
        return Completion(items, d["report"])

    # ------------------------------------------------------------------ export stage
    def save_meshes(self, meshes: Iterable[tuple[int, int, bytes, dict[str, Any]]]) -> int:
        """Write ``(obj_id, frame, obj_bytes, camera_record)`` items as OBJ + camera JSON; returns the count."""
        written = 0
        for obj_id, frame, obj, camera in meshes:
            self.write_bytes(self.mesh_path(obj_id, frame), obj)
            self.write_json(self.focal_path(obj_id, frame), camera)
            written += 1
        return written

    def mesh_people(self) -> frozenset[int]:
        """Ids with a ``mesh_4d_individual/<id>/`` folder (the people whose OBJs are exported)."""
        folder = self.path(self.MESHES)
        if not folder.is_dir():
            return frozenset()
        return frozenset(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def mesh_count(self) -> int:
        """OBJ files under ``mesh_4d_individual/``."""
        return sum(1 for _ in self.path(self.MESHES).glob("*/*.obj"))

    def clear_people(self, rels: Iterable[str], obj_ids: Iterable[int]) -> None:
        """Remove the ``<rel>/<id>/`` folders of ``obj_ids`` (their files are about to be rewritten)."""
        for rel in rels:
            for obj_id in obj_ids:
                shutil.rmtree(self.path(rel) / str(obj_id), ignore_errors=True)

    # ------------------------------------------------------------------ render stage
    def individual_video_path(self, obj_id: int) -> Path:
        return self.path(self.INDIVIDUAL_VIDEOS) / f"4d_individual_{obj_id}.mp4"

    def result_video_path(self) -> Path | None:
        """The 4D result video, if it was written."""
        path = self.path(self.RESULT_VIDEO)
        return path if path.is_file() else None

    def save_render(
        self,
        frames: Iterable[tuple[int, np.ndarray, np.ndarray, dict[int, np.ndarray]]],
        fps: Fraction,
        obj_ids: Iterable[int],
        *,
        individual: bool,
        jpgs: bool,
        queue_depth: int = 0,
    ) -> int:
        """Encode ``(index, background, scene, {obj_id: person alone})`` items, one pass: the
        scene video, with ``individual`` one video per id (the background where the person is
        absent), with ``jpgs`` every rendered frame as a JPG too. Returns the frames written.

        The encoding runs in a thread up to ``queue_depth`` frames behind the one making
        ``frames`` (the renderer; `body4d.overlap.OrderedWriter`, 0 = in this thread)."""
        ids = list(obj_ids) if individual else []
        count = 0
        with contextlib.ExitStack() as stack:
            videos = {"scene": self.path(self.RESULT_VIDEO)} | {i: self.individual_video_path(i) for i in ids}
            writers = {
                key: stack.enter_context(VideoWriter(path, fps, crf=self.crf, preset=self.preset))
                for key, path in videos.items()
            }

            def write(
                index: int, background: np.ndarray, rendered: np.ndarray, people: dict[int, np.ndarray]
            ) -> None:
                writers["scene"].write(rendered)
                if jpgs:
                    self.write_image(Path(self.RENDERED_FRAMES) / frame_file(index, ".jpg"), rendered)
                for i in ids:
                    image = people.get(i, background)
                    writers[i].write(image)
                    if jpgs:
                        self.write_image(
                            Path(self.RENDERED_INDIVIDUAL) / str(i) / frame_file(index, ".jpg"), image
                        )

            # Entered last, left first: every queued frame is encoded before the videos close.
            encoder = stack.enter_context(OrderedWriter(queue_depth, "body4d-render-encode"))
            for item in frames:
                encoder.submit(write, *item)
                count += 1
        return count

    # ------------------------------------------------------------------ bundle stage
    def person_path(self, obj_id: int, suffix: str) -> Path:
        """``people/<id>/<id><suffix>`` (``.glb``, ``.bvh``, ``.npz``, ``.json``)."""
        return self.path(self.PEOPLE) / str(obj_id) / f"{obj_id}{suffix}"

    def save_bundles(self, bundles: Iterable[PersonBundle], scene_glb: bytes | None) -> int:
        """Each person's ``people/<id>/`` files and the scene GLB; returns the number of people."""
        count = 0
        for b in bundles:
            if b.glb is not None:
                self.write_bytes(self.person_path(b.obj_id, ".glb"), b.glb)
            if b.bvh is not None:
                self.write_bytes(self.person_path(b.obj_id, ".bvh"), b.bvh.encode())
            self.write_bytes(self.person_path(b.obj_id, ".npz"), b.npz)
            self.write_json(self.person_path(b.obj_id, ".json"), b.info)
            count += 1
        if scene_glb is not None:
            self.write_bytes(self.SCENE_GLB, scene_glb)
        return count

    def scene_glb_path(self) -> Path | None:
        """The scene's animated GLB, if it was written."""
        path = self.path(self.SCENE_GLB)
        return path if path.is_file() else None

    # ------------------------------------------------------------------ manifest
    @property
    def manifest(self) -> dict[str, Any]:
        """A deep copy of the manifest."""
        with self._lock:
            return json.loads(json.dumps(self._manifest, default=_json_default))

    def set_video(
        self, delivered: VideoInfo, source: VideoInfo, fingerprint: dict[str, Any] | None = None
    ) -> None:
        """The ``video`` section: the frames as the stages see them, the file they came from and
        its `input_fingerprint` (recorded by `bind_input` when not given here)."""
        with self._lock:
            self._manifest["video"] = _video_section(delivered, source, fingerprint)
            self._save_manifest()

    def set_checkpoints(self, checkpoints: dict[str, dict[str, Any]]) -> None:
        """The ``checkpoints`` section: which checkpoint files a run used (and whether tiny)."""
        with self._lock:
            self._manifest["checkpoints"] = checkpoints
            self._save_manifest()

    def record_artefacts(self, stage: str, rels: Iterable[str]) -> None:
        """The ``artefacts`` entry of ``stage``: those of ``rels`` (templates allowed) that exist now."""
        present = [r.format(run_id=self.run_id) for r in rels if self.path(r).exists()]
        with self._lock:
            self._manifest["artefacts"][stage] = present
            self._save_manifest()

    def clear(self, stage: str, rels: Iterable[str]) -> None:
        """Remove ``stage``'s artefacts (files or folders) before it runs again."""
        for rel in rels:
            path = self.path(rel)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        with self._lock:
            if self._manifest["artefacts"].pop(stage, None) is not None:
                self._save_manifest()

    def invalidate(self, *names: str, changes_known: bool = False) -> None:
        """Mark finished stages ``stale`` (their inputs changed): they run again on resume.

        Args:
            names: the stages.
            changes_known: the inputs changed only by the mask repairs recorded since each stage's
                ``masks_revision``, which is kept (the stage may redo just those person-frames);
                otherwise it is dropped, and every stage named runs again whole.
        """
        with self._lock:
            changed = False
            for name in names:
                st = self._manifest["stages"].get(name)
                if not st:
                    continue
                if st.get("status") == "done":
                    st["status"] = "stale"
                    changed = True
                if not changes_known and st.pop(MASKS_REVISION, None) is not None:
                    changed = True
            if changed:
                self._save_manifest()

    def stage_status(self, name: str) -> str | None:
        with self._lock:
            st = self._manifest["stages"].get(name)
            return st["status"] if st else None

    def is_done(self, name: str) -> bool:
        return self.stage_status(name) == "done"

    def stage_masks_revision(self, name: str) -> int | None:
        """The masks revision a stage last ran on (``masks_revision`` in its entry), if still
        meaningful: None once a change other than a mask repair made it stale."""
        with self._lock:
            st = self._manifest["stages"].get(name)
            return st.get(MASKS_REVISION) if st else None

    def stage_settings(self, name: str) -> str | None:
        """The settings fingerprint a finished stage recorded (``settings`` in its entry), if any."""
        with self._lock:
            st = self._manifest["stages"].get(name)
            return st.get("settings") if st else None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Record a stage: status ``running`` → ``done`` (with seconds) or ``failed``/``cancelled``
        (the user's Cancel)/``interrupted`` (Ctrl-C, SIGTERM), with the error. Yields a dict whose items land in the stage's manifest entry when done.
        Earlier outputs are never touched on failure.
        """
        from body4d.jobs import Cancelled

        extra: dict[str, Any] = {}
        started = time.time()
        self._set_stage(name, status="running", started=_now(), error=None, seconds=None)
        try:
            yield extra
        except BaseException as exc:
            status = (
                "interrupted"
                if isinstance(exc, KeyboardInterrupt)
                else "cancelled"
                if isinstance(exc, Cancelled)
                else "failed"
            )
            error = self._write_failure(exc)
            try:
                self._set_stage(
                    name,
                    status=status,
                    seconds=round(time.time() - started, 3),
                    error=f"{type(error).__name__}: {error}",
                    finished=_now(),
                )
            except RunDirError:
                if error is exc:
                    raise
                log.warning("stage %s failed and the manifest could not record it: %s", name, error)
            if error is not exc:
                raise error from exc
            raise
        # A new identity of what the stage wrote: stages that read it record it (``inputs``).
        extra.setdefault("output", secrets.token_hex(8))
        self._set_stage(
            name, status="done", seconds=round(time.time() - started, 3), finished=_now(), **extra
        )

    def _write_failure(self, exc: BaseException) -> BaseException:
        """``exc`` as the clear error of a full disk or an unwritable folder, if it is one; else ``exc``."""
        if (full := disk_full(exc)) is not None:
            return DiskFullError(self.root, getattr(full, "needed", None), self.run_id)
        if (cause := _read_only(exc)) is not None:
            return _not_writable(self.root, cause.strerror or str(cause), self.run_id)
        return exc

    def stage_output(self, name: str) -> str | None:
        """The identity of a finished stage's result (``output`` in its entry; new each time it ran)."""
        with self._lock:
            st = self._manifest["stages"].get(name)
            return st.get("output") if st else None

    def stage_inputs(self, name: str) -> dict[str, str | None] | None:
        """What a finished stage read (``inputs``: name -> identity), if it recorded it."""
        with self._lock:
            st = self._manifest["stages"].get(name)
            return dict(st["inputs"]) if st and isinstance(st.get("inputs"), dict) else None

    def _set_stage(self, name: str, **fields: Any) -> None:
        with self._lock:
            st = self._manifest["stages"].setdefault(name, {})
            st.update(fields)
            self._save_manifest()

    def _video_shape(self) -> tuple[int, int, int]:
        video = self._manifest.get("video") or {}
        try:
            return int(video["n_frames"]), int(video["height"]), int(video["width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(
                f"{self.path(MANIFEST)} has no video section: the run cannot be resumed"
            ) from exc

    def _save_manifest(self) -> None:
        """Save the manifest atomically; on a full disk the reserve is deleted to make room once.

        Raises:
            DiskFullError: no room even so. RunDirError: the folder cannot be written.
        """
        data = (json.dumps(self._manifest, indent=2, default=_json_default) + "\n").encode("utf-8")
        try:
            try:
                atomic_write_bytes(self.root / MANIFEST, data)
            except DiskFullError:
                if not self._release_reserve():
                    raise
                atomic_write_bytes(self.root / MANIFEST, data)
                # The manifest took no more room than before; the full disk was a passing write
                # (removed when it failed), so the reserve usually fits again for the next time;
                # when it does not, the manifest is saved all the same.
                with contextlib.suppress(OSError, RunDirError):
                    self._make_reserve()
        except DiskFullError as exc:
            raise DiskFullError(self.root, len(data), self.run_id) from exc
        except OSError as exc:
            if (cause := _read_only(exc)) is not None:
                raise _not_writable(self.root, cause.strerror or str(cause), self.run_id) from exc
            raise


def _writer_options(config: Any) -> dict[str, Any]:
    """The `RunDir` options a `body4d.config.Config` sets (its ``video`` and ``outputs`` sections)."""
    return {
        "jpeg_quality": config.video.jpeg_quality,
        "crf": config.video.crf,
        "preset": config.video.preset,
        "frame_images": config.outputs.frame_images,
        "mask_images": config.outputs.mask_images,
    }


def _video_section(
    delivered: VideoInfo, source: VideoInfo, fingerprint: dict[str, Any] | None
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "n_frames": delivered.n_frames,
        "fps": f"{delivered.fps.numerator}/{delivered.fps.denominator}",
        "width": delivered.width,
        "height": delivered.height,
        "codec": delivered.codec,
        "rotation": delivered.rotation,
        "source_width": source.width,
        "source_height": source.height,
    }
    if fingerprint is not None:
        section["fingerprint"] = fingerprint
    return section


def _read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest, or `RunDirError` naming the damage and the fix (a new run)."""
    fix = "start a new run (body4d run --input_video VIDEO, without --resume)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}): the run cannot be resumed; {fix}") from exc
    except OSError as exc:
        raise RunDirError(f"cannot read {path} ({exc.strerror}): make it readable, or {fix}") from exc
    if not isinstance(manifest, dict):
        problem = f"it holds a JSON {type(manifest).__name__}, not the manifest object"
    else:
        problem = next(
            (
                f"its {key!r} section is missing or not an object"
                for key in ("stages", "artefacts")
                if not isinstance(manifest.get(key), dict)
            ),
            None,
        )
        if problem is None and not isinstance(manifest.get("video"), dict | None):
            problem = "its 'video' section is not an object"
        if problem is None:
            problem = next(
                (
                    f"stage {name!r} has no status"
                    for name, entry in manifest["stages"].items()
                    if not isinstance(entry, dict) or not isinstance(entry.get("status"), str)
                ),
                None,
            )
    if problem is not None:
        raise RunDirError(f"{path} is damaged ({problem}): the run cannot be resumed; {fix}")
    return manifest


def frame_runs(frames: Iterable[int]) -> list[list[int]]:
    """Frames as inclusive runs ``[[first, last], ...]`` (e.g. 3, 4, 5, 9 -> [[3, 5], [9, 9]])."""
    runs: list[list[int]] = []
    for f in sorted(set(frames)):
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return runs


def expand_runs(runs: Iterable[Iterable[int]]) -> list[int]:
    """The frames of inclusive runs ``[[first, last], ...]`` (the inverse of `frame_runs`)."""
    return [f for first, last in runs for f in range(first, last + 1)]


def bodies_arrays(tracks: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Flatten per-identity arrays into ``np.savez`` keys ``id<obj_id>/<name>`` plus ``obj_ids``.

    Args:
        tracks: ``{obj_id: {name: array with leading frame axis}}``; each must hold ``frames``.
    """
    out: dict[str, np.ndarray] = {"obj_ids": np.array(sorted(tracks), dtype=np.int32)}
    for obj_id, arrays in tracks.items():
        if "frames" not in arrays:
            raise ValueError(f"track {obj_id} has no 'frames' array")
        n = len(arrays["frames"])
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.shape[:1] != (n,):
                raise ValueError(f"track {obj_id}: {name} has {arr.shape[:1]} frames, expected {n}")
            out[f"id{obj_id}/{name}"] = arr
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Fraction):
        return f"{obj.numerator}/{obj.denominator}"
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
