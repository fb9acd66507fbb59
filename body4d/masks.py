"""Label maps and masks: palette PNG I/O (DAVIS palette), per-id masks, boxes, overlays.

A label map is ``uint8[H, W]``: pixel value = object id (1..255), 0 = background. Every
visualisation (mask overlays, meshes, the UI) colours object ``k`` with `color_for(k)`.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from body4d.errors import InputError
from body4d.types import Click, MaskTrack, Segmentation
from body4d.video import VideoError, check_regular_file, natural_key, open_image
from models.frames import MAX_OBJ_ID

# The frame number at the end of a mask's file name (``00012`` of ``frame_00012.png``).
_TRAILING_NUMBER = re.compile(r"(\d+)$")

# Width in pixels of the white outline drawn around each object in overlays.
CONTOUR_WIDTH = 2
# The outline is what one erosion per pixel of width removes; each erosion takes the 4 neighbours.
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
# Image modes a label map may have: palette, 8-bit greyscale, 1-bit, and 16-bit greyscale (values
# must still be ids 0..255). RGB is refused: its values are colours, not ids.
LABEL_MODES = ("P", "L", "1", "I;16", "I;16B", "I;16L", "I")
# A memory-mapped label volume hands its pages back to the kernel every this many frame reads or
# writes: its share of the resident set stays below about this many frames (0.9 MB each at
# 1280x720) however long the video (benchmarks/README.md, long videos).
RELEASE_EVERY_FRAMES = 32


def _davis_palette() -> np.ndarray:
    """The 256-entry DAVIS palette (bit-interleaved, as in the PASCAL VOC/DAVIS tools)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


DAVIS_PALETTE = _davis_palette()

# Display colours (the original's colormap entries k+4): 1 orange, 2 yellow, 3 purple, 4 green,
# 5 sky blue, 6 dark red; further ids cycle through a golden-angle hue sequence.
_BASE_COLORS = np.array(
    [(216, 82, 24), (236, 176, 31), (125, 46, 141), (118, 171, 47), (76, 189, 237), (161, 19, 46)],
    dtype=np.uint8,
)


def color_for(obj_id: int) -> tuple[int, int, int]:
    """RGB display colour of object ``obj_id`` (>= 1), the same everywhere in body4d."""
    if obj_id < 1:
        raise ValueError(f"object ids start at 1, got {obj_id}")
    if obj_id <= len(_BASE_COLORS):
        r, g, b = _BASE_COLORS[obj_id - 1]
        return int(r), int(g), int(b)
    hue = (obj_id * 0.618033988749895) % 1.0
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.92)
    return int(r * 255), int(g * 255), int(b * 255)


def encode_palette_png(labels: np.ndarray) -> bytes:
    """PNG bytes of a label map in palette mode (DAVIS palette, pixel = object id)."""
    labels = _check_labels(labels)
    im = Image.fromarray(labels, mode="P")
    im.putpalette(DAVIS_PALETTE.tobytes())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def read_palette_png(path: str | Path) -> np.ndarray:
    """Read a label map from a palette PNG (or an 8/16-bit greyscale PNG): ``uint8[H, W]``.

    Raises:
        InputError: the file is not a PNG (JPEG data under a .png name: its compression noise
            would become object ids), is an RGB image, is damaged or truncated, or holds values
            above 255.
    """
    path = Path(path)
    with _open_label_png(path) as im:
        try:
            values = np.asarray(im)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for damaged or cut data
            raise InputError(f"mask {path} is damaged or truncated ({exc}): export it again") from exc
    if values.dtype != np.uint8:
        if values.size and int(values.max()) > MAX_OBJ_ID:
            raise InputError(
                f"mask {path} holds the value {int(values.max())}: object ids are 0..{MAX_OBJ_ID}"
            )
        values = values.astype(np.uint8)
    return values.copy()


def _open_label_png(path: Path) -> Image.Image:
    """Open a mask lazily (header only): a PNG in one of `LABEL_MODES`, else an `InputError`."""
    try:
        im = open_image(path, 0)  # the frame size is checked against the header by the caller
    except VideoError as exc:
        raise InputError(f"mask {exc}") from exc
    if im.format != "PNG" or im.mode not in LABEL_MODES:
        found = f"{im.format or 'unknown'} data" if im.format != "PNG" else f"a PNG of mode {im.mode}"
        im.close()
        raise InputError(
            f"mask {path} is {found}, not a label map: save masks as lossless palette ('P') or "
            "greyscale PNGs whose pixel values are object ids (JPEG noise would become ids)"
        )
    return im


def check_mask_folder(folder: Path, n_frames: int, height: int, width: int) -> list[Path]:
    """Check a masks folder from headers only, before any model loads: one PNG label map per frame.

    Every file's format, mode and size are read from its header, and its chunks' checksums are
    verified (a cut or damaged file fails here); no pixel is decompressed.

    Args:
        folder: the ``--masks`` folder.
        n_frames: frames of the video.
        height: frame height in pixels.
        width: frame width in pixels.

    Returns:
        The mask files in frame order (natural sort).

    Raises:
        InputError: not a folder, a different number of PNGs than frames, a file that is not a
            regular file or not a PNG label map, of another size, or damaged.
    """
    if not folder.is_dir():
        raise InputError(f"--masks {folder} is not a folder: pass a folder of one PNG per frame")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=lambda p: natural_key(p.name)
    )
    if len(files) != n_frames:
        raise InputError(
            f"--masks {folder} holds {len(files)} PNG masks but the video has {n_frames} frames: "
            "give exactly one mask per frame (sorted by name)"
        )
    _check_numbering(folder, files)
    for path in files:
        try:
            check_regular_file(path, "mask")
        except VideoError as exc:
            raise InputError(f"mask {exc}") from exc
        with _open_label_png(path) as im:
            if im.size != (width, height):
                raise InputError(
                    f"mask {path.name} is {im.size[0]}x{im.size[1]} but the video is "
                    f"{width}x{height}: masks must have the frame size"
                )
            try:
                im.verify()
            except (OSError, ValueError, SyntaxError) as exc:
                raise InputError(f"mask {path} is damaged or truncated ({exc}): export it again") from exc
    return files


def _check_numbering(folder: Path, files: list[Path]) -> None:
    """Numbered mask names (``00000.png``, ``mask_17.png``) must count up by one constant step: a gap
    means the mask of one frame is missing, and every later mask would land on the frame before its own.

    Raises:
        InputError: two neighbouring files are further apart than the first two.
    """
    numbers = [_TRAILING_NUMBER.search(p.stem) for p in files]
    if len(files) < 3 or not all(numbers):
        return  # not numbered: natural order is all there is
    values = [int(m.group(1)) for m in numbers if m]
    step = values[1] - values[0]
    for i in range(2, len(files)):
        if values[i] - values[i - 1] != step:
            raise InputError(
                f"--masks {folder}: {files[i - 1].name} is followed by {files[i].name}, unlike the step of "
                f"{step} before, so the masks are not one per frame in order: add the missing one"
            )


def masks_to_labels(masks: Mapping[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Merge per-id boolean masks into a label map; where masks overlap the higher id wins.

    Args:
        masks: ``{obj_id: bool[H, W]}`` with ids in 1..255.
        shape: ``(H, W)`` of the label map.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    for obj_id in sorted(masks):
        if not 1 <= obj_id <= MAX_OBJ_ID:
            raise ValueError(f"object id {obj_id} is outside 1..{MAX_OBJ_ID}")
        mask = np.asarray(masks[obj_id], dtype=bool)
        if mask.shape != tuple(shape):
            raise ValueError(f"mask of object {obj_id} is {mask.shape}, expected {tuple(shape)}")
        labels[mask] = obj_id
    return labels


class LabelVolume(np.memmap):
    """``uint8[T, H, W]`` label maps memory-mapped from a file, whose pages are released as it is used.

    A page of a mapping stays in the process's resident set once touched, so walking a long
    video's masks (segmentation, saving, recovery, rendering) would end up holding all of them.
    Every `RELEASE_EVERY_FRAMES` item reads or writes of the volume the whole mapping is released
    (``MADV_DONTNEED``): a shared file mapping keeps its data, and the next access reads it back
    from the page cache. Views of it (a frame) behave as plain memory-mapped arrays.
    """

    def __getitem__(self, index: Any) -> Any:
        self._used()
        return super().__getitem__(index)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._used()
        super().__setitem__(index, value)

    def _used(self) -> None:
        if self.ndim != 3 or self._mmap is None:
            return
        self._uses = getattr(self, "_uses", 0) + 1
        if self._uses % RELEASE_EVERY_FRAMES == 0:
            self._mmap.madvise(mmap.MADV_DONTNEED)


def label_volume(n: int, height: int, width: int, folder: Path, max_bytes: int) -> np.ndarray:
    """``uint8[n, H, W]`` zeros: in RAM up to ``max_bytes``, else a `LabelVolume` in a file in ``folder``."""
    if n * height * width <= max_bytes:
        return np.zeros((n, height, width), dtype=np.uint8)
    fd, name = tempfile.mkstemp(prefix="labels_", suffix=".npy", dir=folder)
    os.close(fd)
    mapped = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=(n, height, width))
    return mapped.view(LabelVolume)


def read_mask_folder(folder: Path, labels: np.ndarray) -> Segmentation:
    """Masks from another tool: one palette or greyscale PNG per frame (natural sort), pixel = id.

    Args:
        folder: the folder of PNGs.
        labels: ``uint8[T, H, W]`` to fill (T frames of the video, H x W its size).

    Returns:
        the masks as a segmentation (mode ``"imported"``; first frame = where each id first appears).

    Raises:
        InputError: as `check_mask_folder`, or every mask empty (each message names the problem
            and the fix).
    """
    files = check_mask_folder(folder, *labels.shape)
    first: dict[int, int] = {}
    for i, path in enumerate(files):
        lab = read_palette_png(path)
        labels[i] = lab
        for obj_id in np.unique(lab):
            first.setdefault(int(obj_id), i)
    first.pop(0, None)
    if not first:
        raise InputError(
            f"--masks {folder}: every mask is empty (all pixels 0): there is nobody to reconstruct"
        )
    track = MaskTrack(obj_ids=tuple(sorted(first)), labels=labels)
    return Segmentation(track, dict(sorted(first.items())), "imported")


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive) of a boolean mask, or None if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5, contour: bool = True) -> np.ndarray:
    """Paint every object of ``labels`` on ``frame`` in its colour, with a white contour.

    Args:
        frame: RGB ``uint8[H, W, 3]``.
        labels: ``uint8[H, W]`` label map of the same size.
        alpha: opacity of the colour fill.
        contour: draw a 2-px white outline around each object.
    """
    labels = _check_labels(labels)
    if frame.shape[:2] != labels.shape:
        raise ValueError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    # Only object pixels change: each object is painted inside its box (plus the border the
    # contour needs), with a per-grey-level table of the blend (the same float32 arithmetic per
    # pixel, done for the 256 levels only), so a 1080p frame is never converted to float.
    out = frame.copy()
    counts = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [MAX_OBJ_ID + 1], [0, MAX_OBJ_ID + 1])
    levels = np.arange(256, dtype=np.float32)[:, None]
    for obj_id in np.flatnonzero(counts.ravel()[1:]) + 1:
        mask = labels == obj_id
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        y0, y1 = max(ys[0] - CONTOUR_WIDTH, 0), ys[-1] + CONTOUR_WIDTH + 1
        x0, x1 = max(xs[0] - CONTOUR_WIDTH, 0), xs[-1] + CONTOUR_WIDTH + 1
        sub, window = mask[y0:y1, x0:x1].view(np.uint8), out[y0:y1, x0:x1]
        color = np.array(color_for(int(obj_id)), dtype=np.float32)
        table = np.clip(levels * (1 - alpha) + color * alpha + 0.5, 0, 255).astype(np.uint8)
        # OpenCV writes into contiguous arrays only: paint a copy of the box, then put it back.
        painted = cv2.copyTo(cv2.LUT(window, table.reshape(256, 1, 3)), sub, np.ascontiguousarray(window))
        if contour:
            inner = cv2.erode(
                sub, _CROSS, iterations=CONTOUR_WIDTH, borderType=cv2.BORDER_CONSTANT, borderValue=0
            )
            painted = cv2.copyTo(np.full_like(painted, 255), cv2.subtract(sub, inner), painted)
        window[...] = painted
    return out


def visualise_masks(frame: np.ndarray, labels: np.ndarray, background_alpha: float = 0.5) -> np.ndarray:
    """`masks_vis/` image: objects in full colour of the frame, background whitened by ``background_alpha``."""
    labels = _check_labels(labels)
    # The whitening as a per-grey-level table (the same float32 arithmetic, done for 256 levels).
    levels = np.arange(256, dtype=np.float32)
    table = np.clip(levels * (1 - background_alpha) + 255.0 * background_alpha + 0.5, 0, 255).astype(np.uint8)
    out = cv2.copyTo(cv2.LUT(np.ascontiguousarray(frame), table), (labels == 0).view(np.uint8), frame.copy())
    return overlay(out, labels, alpha=0.35)


def draw_clicks(frame: np.ndarray, clicks: Iterable[Click]) -> np.ndarray:
    """Draw click markers: green disc with '+' for positive, red with '-' for negative."""
    out = frame.copy()
    h, w = out.shape[:2]
    radius = max(6, int(round(0.015 * min(h, w))))
    for click in clicks:
        cx, cy = int(round(click.x)), int(round(click.y))
        # The disc lies in the square of side 2 * radius + 1 around the click: only that is drawn on.
        top, left = max(0, cy - radius), max(0, cx - radius)
        yy, xx = np.ogrid[top : cy + radius + 1, left : cx + radius + 1]
        disc = out[top : cy + radius + 1, left : cx + radius + 1]
        d2 = (xx[:, : disc.shape[1]] - cx) ** 2 + (yy[: disc.shape[0]] - cy) ** 2
        fill = (60, 200, 80) if click.positive else (220, 60, 60)
        disc[d2 <= radius**2] = (255, 255, 255)
        disc[d2 <= (radius - 2) ** 2] = fill
        arm = max(2, radius // 2)
        y0, y1 = max(0, cy - 1), min(h, cy + 1)
        out[y0:y1, max(0, cx - arm) : min(w, cx + arm + 1)] = (255, 255, 255)
        if click.positive:
            x0, x1 = max(0, cx - 1), min(w, cx + 1)
            out[max(0, cy - arm) : min(h, cy + arm + 1), x0:x1] = (255, 255, 255)
    return out


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label map is HxW, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > MAX_OBJ_ID):
            raise ValueError(f"label values must be 0..{MAX_OBJ_ID}, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
    return labels
