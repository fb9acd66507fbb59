"""SAM-3 adapter: click/mask-prompted video tracking and text-prompted ("person") detection.

Networks (Hugging Face transformers, loaded strictly from one ``facebook/sam3`` snapshot folder):

* ``Sam3TrackerVideoModel`` + ``Sam3TrackerVideoProcessor``: prompts on any frame -> masks, and
  frame-by-frame tracking of every target (memory bank of the SAM-2 family).
* ``Sam3Model`` + ``Sam3Processor``: open-vocabulary instance detection on one image.

Both share the same ViT weights in the checkpoint; the adapter keeps a single copy in memory.
This module runs networks and keeps per-video tracking state (`TrackerSession`); it decides
nothing about which frames to track or which detections to keep (see ``body4d.stages.segment``).

Memory (why `TrackerSession` exists instead of the processor's ``init_video_session(video=...)``):
the stock session preprocesses and stores every frame (3 x 1008^2 float32 = 12.2 MB per frame)
and keeps every per-frame output of every object for the whole video (~6.4 MB per object-frame
at full size). `TrackerSession` instead preprocesses frames on demand from a `FrameSource` with a
small LRU, drops the 1008^2 ``high_res_masks`` as soon as a frame is done (they are only used
inside the call that produced them), and keeps non-conditioning outputs only for the last
``max_cached_frames`` frames of the current propagation direction. With ``max_cached_frames >=
max(num_maskmem - 1, max_object_pointers_in_encoder)`` (= 16 for SAM-3) nothing that the tracker
can still read is dropped, so masks are identical to untrimmed tracking.

Preprocessing (`FramePreprocessor`): every frame the tracker or the detector sees is uploaded once
as uint8 to the model's device and resized and normalised there, on every device (CPU included).
It is the processors' own torch path as torchvision runs it on a GPU (float32 antialiased bilinear
resize, rounding to grey levels, fused rescale + normalise), so on a GPU it equals the processor
output exactly; on a CPU torchvision resizes uint8 with a fixed-point kernel that differs by at
most one grey level (2/255 after normalisation).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError

from models.errors import TINY_MARKER, CheckpointError, setup_hint
from models.frames import MAX_OBJ_ID, FrameSource, PromptError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# The files transformers 5.23 opens from a facebook/sam3 snapshot to build what body4d uses
# (Sam3TrackerVideoModel, Sam3Model, Sam3TrackerVideoProcessor, Sam3Processor). Without any one of
# them loading fails or builds a different object; tests/test_sam3_adapter.py proves both ways.
SNAPSHOT_FILES: dict[str, str] = {
    CONFIG_FILE: "architecture of both networks; AutoTokenizer also reads it",
    "model.safetensors": "weights of both networks (one file in facebook/sam3)",
    "processor_config.json": "image and video preprocessing (nested image_processor / video_processor)",
    "tokenizer.json": "CLIP BPE vocabulary and merges for the text prompt",
    "tokenizer_config.json": "tokenizer settings (class, model_max_length 32)",
}
# Meta's own 3.4 GB checkpoint in the same hub repository: transformers cannot read it and it is
# never downloaded (the hub repo's vocab.json, merges.txt and special_tokens_map.json are redundant
# with tokenizer.json / tokenizer_config.json and not required either).
META_CHECKPOINT = "sam3.pt"
EXPECTED_MODEL_TYPE = "sam3_video"

POSITIVE_LABEL = 1  # SAM point label of a foreground click
NEGATIVE_LABEL = 0  # SAM point label of a background click


class Point(Protocol):
    """One click on one frame (``body4d.types.Click`` is one)."""

    @property
    def frame(self) -> int: ...
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def positive(self) -> bool: ...


class Sam3Settings(Protocol):
    """The settings this adapter reads: the ``sam3`` config section (``body4d.config.Sam3Config``).

    Attributes:
        ckpt_path: the ``facebook/sam3`` snapshot folder.
        mask_threshold: tracker mask logits above this are foreground.
        max_cached_frames: non-conditioning outputs kept per propagation direction (0 = keep all).
        vision_cache_frames: frames whose ViT features stay cached (quick re-clicks).
        frame_cache: preprocessed frames kept in the on-demand LRU.
        detection_prompt: text concept of the detector, e.g. "person".
        detection_threshold: minimum detection score in [0, 1].
        detection_mask_threshold: detector mask probabilities above this are foreground.
        detection_nms_iou: boxes overlapping a higher-scoring box above this IoU are dropped.
    """

    @property
    def ckpt_path(self) -> str: ...
    @property
    def mask_threshold(self) -> float: ...
    @property
    def max_cached_frames(self) -> int: ...
    @property
    def vision_cache_frames(self) -> int: ...
    @property
    def frame_cache(self) -> int: ...
    @property
    def detection_prompt(self) -> str: ...
    @property
    def detection_threshold(self) -> float: ...
    @property
    def detection_mask_threshold(self) -> float: ...
    @property
    def detection_nms_iou(self) -> float: ...


@dataclass(frozen=True)
class Detections:
    """Instances found by the detector on one frame, sorted by decreasing score.

    Attributes:
        scores: ``float32[N]`` in [0, 1] (class probability x presence probability).
        boxes: ``float32[N, 4]`` ``(x0, y0, x1, y1)`` in pixels of the original frame.
        masks: ``bool[N, H, W]`` at the original frame resolution.
    """

    scores: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class FrameMasks:
    """Tracker output on one frame.

    Attributes:
        frame: 0-based frame index.
        masks: ``{obj_id: bool[H, W]}`` at the original resolution, for every object in the session.
    """

    frame: int
    masks: dict[int, np.ndarray]


@dataclass(frozen=True)
class SessionMemory:
    """Bytes held by a tracking session (measured on the tensors themselves).

    Attributes:
        outputs: per-frame tracker outputs of all objects (masks, memories, pointers).
        frames: preprocessed frames held in memory.
        vision_features: cached ViT features.
        n_objects: objects in the session.
        n_output_frames: distinct frames with stored outputs (max over objects).
    """

    outputs: int
    frames: int
    vision_features: int
    n_objects: int
    n_output_frames: int

    @property
    def total(self) -> int:
        return self.outputs + self.frames + self.vision_features


def snapshot_problem(ckpt_dir: str | Path) -> str | None:
    """Why ``ckpt_dir`` is not a loadable ``facebook/sam3`` snapshot, or None when every needed file is there.

    Only file presence is checked (cheap enough for a status panel); `check_checkpoint` also reads
    the config. A file of 0 bytes counts as missing (an interrupted copy).
    """
    path = Path(ckpt_dir)
    if not path.exists():
        return "not found"
    if not path.is_dir():
        return "not a folder"
    missing = [name for name in SNAPSHOT_FILES if not _non_empty_file(path / name)]
    if not missing:
        return None
    problem = f"incomplete, missing {', '.join(missing)}"
    if (path / META_CHECKPOINT).is_file():
        problem += (
            f" ({META_CHECKPOINT} there is Meta's own checkpoint format, which transformers cannot load: "
            "the transformers files are needed)"
        )
    return problem


def _non_empty_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _fix(path: Path, *, again: bool = False) -> str:
    """How to get the snapshot folder ``path`` (setup downloads it to ``<ckpt_root>/sam3``).

    Args:
        path: the snapshot folder.
        again: the files are there but broken (setup skips a folder it completed, so delete it first).
    """
    command = setup_hint(path.parent)
    if again:
        return f"delete {path} and download it again with `{command}`"
    return f"download it with `{command}` or set sam3.ckpt_path"


def check_checkpoint(ckpt_dir: str | Path) -> Path:
    """Verify that ``ckpt_dir`` is a complete ``facebook/sam3`` snapshot; return it as a Path.

    Raises:
        CheckpointError: naming the folder, every missing file and the setup command (whose
            checkpoint root is the folder above ``ckpt_dir``, where setup puts ``sam3/``).
    """
    path = Path(ckpt_dir)
    fix = _fix(path)
    problem = snapshot_problem(path)
    if problem is not None:
        raise CheckpointError(path, f"SAM-3 checkpoint folder {path}: {problem}; {fix}")
    try:
        model_type = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise CheckpointError(
            path, f"{path / CONFIG_FILE} is not a valid JSON config ({exc}): {fix}"
        ) from exc
    if model_type != EXPECTED_MODEL_TYPE:
        raise CheckpointError(
            path,
            f"{path} holds a {model_type!r} checkpoint, not a facebook/sam3 snapshot "
            f"(model_type {EXPECTED_MODEL_TYPE!r}): {fix}",
        )
    return path


def check_clicks(
    obj_id: int,
    frame: int,
    clicks: Sequence[Point],
    n_frames: int,
    height: int,
    width: int,
    *,
    has_other_prompts: bool = False,
) -> None:
    """Validate the clicks of one target on one frame (no network needed).

    Raises:
        PromptError: id outside 1..255, frame outside the video, no clicks, a click on another
            frame or outside the ``width x height`` frame, or only negative clicks for a target
            with no other prompt.
    """
    _check_obj_id(obj_id)
    _check_frame_index(frame, n_frames)
    if not clicks:
        raise PromptError(f"no clicks given for object {obj_id} on frame {frame}: click on the person")
    for click in clicks:
        if click.frame != frame:
            raise PromptError(f"click {click} is on frame {click.frame}, not on frame {frame}")
        if not (0 <= click.x < width and 0 <= click.y < height):
            raise PromptError(
                f"click ({click.x}, {click.y}) on frame {frame} is outside the {width}x{height} "
                "frame: x must be in [0, width) and y in [0, height) pixels"
            )
    if not any(c.positive for c in clicks) and not has_other_prompts:
        raise PromptError(
            f"object {obj_id} has only negative clicks: add a positive click on the person first"
        )


def _check_obj_id(obj_id: int) -> None:
    if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer) or not 1 <= obj_id <= MAX_OBJ_ID:
        raise PromptError(f"object id {obj_id!r} is invalid: use an integer from 1 to {MAX_OBJ_ID}")


def _check_frame_index(frame: int, n_frames: int) -> None:
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer) or not 0 <= frame < n_frames:
        raise PromptError(f"frame {frame!r} is outside the video: use 0 to {n_frames - 1}")


def _load_strict(cls: type, path: Path, what: str, fix: str) -> torch.nn.Module:
    """``cls.from_pretrained(path)`` offline in fp32, refusing any missing or mismatched weight."""
    try:
        model, info = cls.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise CheckpointError(path, f"cannot load the SAM-3 {what} from {path} ({exc}): {fix}") from exc
    bad = sorted(info.get("missing_keys", [])) + sorted(str(k) for k in info.get("mismatched_keys", []))
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CheckpointError(
            path,
            f"SAM-3 {what} weights in {path} do not match the model ({len(bad)} missing or "
            f"mismatched: {shown}): {fix}",
        )
    return model.eval()


def _load_processor(cls: type, path: Path, what: str, fix: str) -> Any:
    """``cls.from_pretrained(path)`` offline, with a `CheckpointError` naming the folder on failure."""
    try:
        return cls.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(path, f"cannot load the SAM-3 {what} from {path} ({exc}): {fix}") from exc


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Sam3Models:
    """Loaded SAM-3 networks, shared read-only by every session of the process.

    Build with `Sam3Models.load`. ``dtype`` is the compute precision: weights stay float32 and
    half precision is applied with ``torch.autocast`` around each call (the upstream advice for
    SAM-3 quality, huggingface/transformers#46493); it is never set globally.
    """

    def __init__(
        self,
        tracker: torch.nn.Module,
        tracker_processor: Any,
        detector: torch.nn.Module | None,
        detector_processor: Any | None,
        device: torch.device,
        dtype: torch.dtype,
        settings: Sam3Settings,
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.tracker_processor = tracker_processor
        self.detector = detector
        self.detector_processor = detector_processor
        self.device = device
        self.dtype = dtype
        self.tracker_frames = FramePreprocessor(tracker_processor.video_processor, device)
        self.detector_frames = (
            FramePreprocessor(detector_processor.image_processor, device) if detector_processor else None
        )

    @classmethod
    def load(
        cls,
        settings: Sam3Settings,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        with_detector: bool = True,
    ) -> Sam3Models:
        """Load the tracker (and the detector) from the ``facebook/sam3`` snapshot ``settings.ckpt_path``.

        Args:
            settings: the ``sam3`` config section (snapshot folder, session and detection settings).
            device: where the networks run (and where frames are preprocessed).
            dtype: compute precision (float32, bfloat16 or float16; see the class doc).
            with_detector: also load ``Sam3Model`` for automatic detection.

        Raises:
            CheckpointError: missing/incomplete folder, unreadable files or weights that do not fit.
        """
        from transformers import Sam3Model, Sam3Processor, Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

        path = check_checkpoint(settings.ckpt_path)
        fix = _fix(path, again=True)
        if (path / TINY_MARKER).exists():
            log.warning("%s is a TINY TEST CHECKPOINT: random weights, results are meaningless", path)
        device = torch.device(device)
        tracker = _load_strict(Sam3TrackerVideoModel, path, "tracker", fix)
        tracker_processor = _load_processor(Sam3TrackerVideoProcessor, path, "tracker processor", fix)
        detector = detector_processor = None
        if with_detector:
            detector = _load_strict(Sam3Model, path, "detector", fix)
            detector_processor = _load_processor(Sam3Processor, path, "detector processor", fix)
            if _same_weights(tracker.vision_encoder.backbone, detector.vision_encoder.backbone):
                tracker.vision_encoder.backbone = detector.vision_encoder.backbone  # one ViT copy
            else:
                log.warning("tracker and detector ViT weights differ in %s: keeping two copies", path)
            detector.to(device)
        tracker.to(device)
        log.info("loaded SAM-3 from %s on %s (compute %s)", path, device, dtype)
        return cls(tracker, tracker_processor, detector, detector_processor, device, dtype, settings)

    @contextlib.contextmanager
    def compute(self) -> Iterator[None]:
        """Inference mode plus autocast to ``dtype`` when it is a half type (scoped, never global)."""
        with torch.inference_mode():
            if self.dtype == torch.float32:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    yield

    @property
    def lossless_cache_frames(self) -> int:
        """Smallest trimming window that never drops state the tracker may read."""
        cfg = self.tracker.config
        return max(int(cfg.num_maskmem) - 1, int(cfg.max_object_pointers_in_encoder))

    def open_session(self, frames: FrameSource, settings: Sam3Settings | None = None) -> TrackerSession:
        """Open a tracking session on a video (frames are read on demand, never all at once).

        Args:
            frames: the decoded video.
            settings: session settings; default those the models were loaded with.
        """
        return TrackerSession(self, frames, settings or self.settings)

    def detect(self, frame: np.ndarray) -> Detections:
        """Find every instance of the text concept ``settings.detection_prompt`` on one frame.

        Scores below ``detection_threshold`` are dropped, mask probabilities above
        ``detection_mask_threshold`` are foreground, and boxes overlapping a higher-scoring box
        above ``detection_nms_iou`` are removed (``torchvision.ops.nms``; the hub-fetched kernel
        path is never used).

        Args:
            frame: ``uint8[H, W, 3]`` RGB.

        Returns:
            `Detections` sorted by decreasing score (possibly empty).
        """
        import torchvision

        if self.detector is None or self.detector_processor is None or self.detector_frames is None:
            raise RuntimeError("the detector is not loaded: use Sam3Models.load(..., with_detector=True)")
        frame = _check_frame(frame)
        height, width = frame.shape[:2]
        s = self.settings
        text = self.detector_processor(text=s.detection_prompt, return_tensors="pt").to(self.device)
        with self.compute():
            out = self.detector(
                pixel_values=self.detector_frames(frame).unsqueeze(0),
                input_ids=text["input_ids"],
                attention_mask=text["attention_mask"],
            )
        result = self.detector_processor.post_process_instance_segmentation(
            out,
            threshold=s.detection_threshold,
            mask_threshold=s.detection_mask_threshold,
            target_sizes=[[height, width]],
        )[0]
        scores = result["scores"].float()
        boxes = result["boxes"].float()
        masks = result["masks"].bool()
        if len(scores):
            keep = torchvision.ops.nms(boxes, scores, s.detection_nms_iou)  # sorted by decreasing score
            scores, boxes, masks = scores[keep], boxes[keep], masks[keep]
        return Detections(
            scores=scores.cpu().numpy().astype(np.float32),
            boxes=boxes.cpu().numpy().astype(np.float32),
            masks=masks.cpu().numpy().reshape(-1, height, width),
        )


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame uint8[H, W, 3], got {frame.dtype}{list(frame.shape)}")
    return frame


class FramePreprocessor:
    """Resize and normalise RGB frames on the model's device as a transformers SAM-3 processor does.

    Reads the settings (side, mean, std, rescale factor) of the snapshot's processor and applies
    its torch path on ``device``: the uint8 frame is uploaded once, resized there with float32
    antialiased bilinear interpolation, rounded to grey levels (the processor's resize returns
    uint8) and normalised with the processor's fused rescale + normalise. This is what torchvision
    does on a GPU, so there the result equals the processor's exactly; on a CPU torchvision uses a
    fixed-point uint8 kernel instead, which differs by at most one grey level (see module doc).
    """

    def __init__(self, processor: Any, device: torch.device) -> None:
        """Check that ``processor`` (a Sam3ImageProcessor or Sam2VideoVideoProcessor) is implemented here.

        Raises:
            CheckpointError: its settings ask for something else than a bilinear resize to a
                fixed size followed by rescale + normalise.
        """
        from transformers.image_utils import PILImageResampling

        size = processor.size
        supported = (
            processor.do_resize
            and processor.do_rescale
            and processor.do_normalize
            and not getattr(processor, "do_center_crop", None)
            and processor.resample == PILImageResampling.BILINEAR
            and size.height
            and size.width
        )
        if not supported:
            raise CheckpointError(
                "processor_config.json",
                f"processor_config.json asks for a {type(processor).__name__} that body4d does not reproduce "
                f"(resize {processor.do_resize}, resample {processor.resample}, size {dict(size)}, rescale "
                f"{processor.do_rescale}, normalise {processor.do_normalize}): use the facebook/sam3 "
                "processor_config.json (bilinear resize to a square side, rescale and normalise)",
            )
        self.device = torch.device(device)
        self.size = (int(size.height), int(size.width))
        # The processor fuses rescale into normalise: (x - mean / r) / (std / r) on 0..255 values.
        scale = 1.0 / processor.rescale_factor
        self._mean = (torch.tensor(processor.image_mean) * scale).view(-1, 1, 1).to(self.device)
        self._std = (torch.tensor(processor.image_std) * scale).view(-1, 1, 1).to(self.device)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        """One frame for the network.

        Args:
            frame: ``uint8[H, W, 3]`` RGB.

        Returns:
            ``float32[3, S_h, S_w]`` on ``device`` (S = the processor's size, 1008 for facebook/sam3).
        """
        rgb = torch.from_numpy(_check_frame(frame)).to(self.device)  # the only upload: uint8
        pixels = rgb.permute(2, 0, 1).unsqueeze(0).float()
        pixels = F.interpolate(pixels, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return ((pixels.round_() - self._mean) / self._std)[0]


class _LazyFrames(Mapping):
    """Stand-in for the session's ``processed_frames`` dict: preprocesses frames on demand.

    Holds at most ``capacity`` preprocessed ``float32[3, S, S]`` frames on the model's device
    (least recently used out).
    """

    def __init__(self, source: FrameSource, preprocess: FramePreprocessor, capacity: int) -> None:
        self._source = source
        self._preprocess = preprocess
        self._capacity = max(1, capacity)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._n = len(source)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._n:
            raise KeyError(index)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        pixels = self._preprocess(self._source.frame(index))
        self._cache[index] = pixels
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return pixels

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._n))

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self._cache.values())


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


class TrackerSession:
    """Per-video tracking state: prompts per object, on-demand frames, bounded memory.

    One per user and video (never shared between users). Object ids are integers 1..255 chosen
    by the caller; they are kept as given (never renumbered).
    """

    def __init__(
        self,
        models: Sam3Models,
        frames: FrameSource,
        settings: Sam3Settings,
    ) -> None:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        n = len(frames)
        if n == 0:
            raise ValueError("the video has no frames")
        first = _check_frame(frames.frame(0))
        self.models = models
        self.n_frames = n
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self.settings = settings
        self.max_cached_frames = settings.max_cached_frames
        self.mask_threshold = settings.mask_threshold
        self._frames = frames
        self._state = Sam3TrackerVideoInferenceSession(
            video=None,
            video_height=self.height,
            video_width=self.width,
            inference_device=models.device,
            inference_state_device=models.device,
            video_storage_device=models.device,
            dtype=torch.float32,
            max_vision_features_cache_size=max(1, settings.vision_cache_frames),
        )
        self._state.processed_frames = _LazyFrames(frames, models.tracker_frames, settings.frame_cache)
        # prompts per object: frame -> ("points", clicks) | ("mask", bool[H, W]); insertion-ordered
        self._prompts: dict[int, dict[int, tuple[str, Any]]] = {}
        self.last_masks: FrameMasks | None = None  # every object's mask from the last prompt call

    # ------------------------------------------------------------------ prompts
    @property
    def obj_ids(self) -> list[int]:
        """Object ids in the session, in the order they were added."""
        return list(self._prompts)

    def frame(self, index: int) -> np.ndarray:
        """Original frame ``index`` as ``uint8[H, W, 3]`` RGB (read from the frame source)."""
        _check_frame_index(index, self.n_frames)
        return _check_frame(self._frames.frame(index))

    def prompt_frames(self, obj_id: int) -> list[int]:
        """Sorted frames on which ``obj_id`` has a prompt."""
        self._check_known(obj_id)
        return sorted(self._prompts[obj_id])

    def first_prompt_frame(self, obj_id: int) -> int:
        """Earliest prompted frame of ``obj_id``."""
        return self.prompt_frames(obj_id)[0]

    def add_points(self, obj_id: int, frame: int, clicks: Sequence[Point]) -> np.ndarray:
        """Set the clicks of ``obj_id`` on ``frame`` (replacing its earlier clicks there) and segment.

        Args:
            obj_id: target id in 1..255 (new or existing).
            frame: 0-based frame index; every click must be on it.
            clicks: positive/negative clicks in original pixels. A target needs a positive click
                on at least one frame, so negative-only clicks are refused for a target with no
                other prompt.

        Returns:
            ``bool[H, W]`` mask of ``obj_id`` on ``frame`` at the original resolution.

        Raises:
            PromptError: bad id, frame, click position or negative-only clicks on a new target.
        """
        clicks = tuple(clicks)
        others = [f for f in self._prompts.get(obj_id, {}) if f != frame]
        check_clicks(
            obj_id, frame, clicks, self.n_frames, self.height, self.width, has_other_prompts=bool(others)
        )
        self._prompts.setdefault(obj_id, {})[frame] = ("points", clicks)
        return self._apply(obj_id, frame)

    def add_mask(self, obj_id: int, frame: int, mask: np.ndarray) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame`` with a mask (e.g. a detection), replacing its prompt there.

        Args:
            obj_id: target id in 1..255.
            frame: 0-based frame index.
            mask: ``bool[H, W]`` at the original resolution, not empty.

        Returns:
            ``bool[H, W]`` mask of ``obj_id`` on ``frame`` as the tracker sees it.
        """
        _check_obj_id(obj_id)
        _check_frame_index(frame, self.n_frames)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.height, self.width):
            raise PromptError(f"mask is {mask.shape}, expected the frame size {(self.height, self.width)}")
        if not mask.any():
            raise PromptError(f"the mask for object {obj_id} on frame {frame} is empty")
        self._prompts.setdefault(obj_id, {})[frame] = ("mask", mask.copy())
        return self._apply(obj_id, frame)

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` and its prompts; the other targets are re-prompted as before.

        Tracking results of the other targets are dropped too (propagate again).
        """
        self._check_known(obj_id)
        del self._prompts[obj_id]
        self._state.reset_tracking_data()
        self.last_masks = None
        for oid, prompts in self._prompts.items():
            for frame in prompts:
                self._apply(oid, frame)

    def spawn(self, obj_ids: Sequence[int]) -> TrackerSession:
        """A new session on the same video holding only ``obj_ids`` with all their prompts.

        Used to track a group of targets backwards from their first prompt without disturbing
        this session's memory of the other targets.
        """
        child = TrackerSession(self.models, self._frames, self.settings)
        for obj_id in obj_ids:
            self._check_known(obj_id)
            child._prompts[obj_id] = dict(self._prompts[obj_id])
            for frame in child._prompts[obj_id]:
                child._apply(obj_id, frame)
        return child

    def clear(self) -> None:
        """Remove every target and prompt (frames and cached features stay)."""
        self._prompts.clear()
        self.last_masks = None
        self._state.reset_tracking_data()

    # ------------------------------------------------------------------ tracking
    def reset_tracking(self) -> None:
        """Drop every tracked (non-prompted) frame output so the next propagation starts clean."""
        for out in self._state.output_dict_per_obj.values():
            out["non_cond_frame_outputs"].clear()
        for tracked in self._state.frames_tracked_per_obj.values():
            tracked.clear()

    def track(self, frame: int, *, reverse: bool = False) -> FrameMasks:
        """Track every object onto ``frame`` from its memory (one propagation step).

        Call in frame order (increasing, or decreasing with ``reverse``); state older than
        ``max_cached_frames`` in that direction is freed after the step.

        Raises:
            PromptError: no target has been prompted yet.
        """
        _check_frame_index(frame, self.n_frames)
        if not self._prompts:
            raise PromptError("no targets to track: add clicks (or detections) for at least one person first")
        with self.models.compute():
            out = self.models.tracker(inference_session=self._state, frame_idx=frame, reverse=reverse)
        masks = self._to_masks(out)
        self._trim(frame, reverse)
        return FrameMasks(frame=frame, masks=masks)

    def propagate(self, start: int, stop: int, *, reverse: bool = False) -> Iterator[FrameMasks]:
        """Track frames ``start, start+1, ..., stop-1`` (or ``start, start-1, ..., stop+1`` with reverse)."""
        step = -1 if reverse else 1
        for frame in range(start, stop, step):
            yield self.track(frame, reverse=reverse)

    def memory(self) -> SessionMemory:
        """Bytes currently held by this session (outputs, frames, cached ViT features)."""
        state = self._state
        outputs = sum(_tensor_bytes(d) for d in state.output_dict_per_obj.values())
        n_frames = max(
            (
                len(set(d["cond_frame_outputs"]) | set(d["non_cond_frame_outputs"]))
                for d in state.output_dict_per_obj.values()
            ),
            default=0,
        )
        frames = state.processed_frames.nbytes() if isinstance(state.processed_frames, _LazyFrames) else 0
        vision = _tensor_bytes(getattr(state.cache, "_vision_features", {}))
        return SessionMemory(outputs, frames, vision, len(state.obj_ids), n_frames)

    # ------------------------------------------------------------------ internals
    def _apply(self, obj_id: int, frame: int) -> np.ndarray:
        """Send the stored prompt of (obj_id, frame) to the tracker and return the object's mask."""
        kind, value = self._prompts[obj_id][frame]
        state = self._state
        processor = self.models.tracker_processor
        obj_idx = state.obj_id_to_idx(obj_id)
        # A re-prompted frame must become a conditioning frame again: forget that it was tracked.
        state.frames_tracked_per_obj[obj_idx].pop(frame, None)
        state.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"].pop(frame, None)
        state.output_dict_per_obj[obj_idx]["cond_frame_outputs"].pop(frame, None)
        if kind == "points":
            points = [[[[float(c.x), float(c.y)] for c in value]]]
            labels = [[[POSITIVE_LABEL if c.positive else NEGATIVE_LABEL for c in value]]]
            processor.add_inputs_to_inference_session(
                state, frame_idx=frame, obj_ids=[obj_id], input_points=points, input_labels=labels
            )
        else:
            processor.add_inputs_to_inference_session(
                state, frame_idx=frame, obj_ids=[obj_id], input_masks=[value]
            )
        # The processor overwrites pending inputs, so run the model right after each add.
        with self.models.compute():
            out = self.models.tracker(inference_session=state, frame_idx=frame)
        self._drop_high_res()
        self.last_masks = FrameMasks(frame=frame, masks=self._to_masks(out))
        return self.last_masks.masks[obj_id]

    def _to_masks(self, out: Any) -> dict[int, np.ndarray]:
        masks = self.models.tracker_processor.post_process_masks(
            [out.pred_masks.float()],
            original_sizes=[[self.height, self.width]],
            mask_threshold=self.mask_threshold,
            binarize=True,
        )[0]
        masks = masks[:, 0].cpu().numpy().astype(bool)
        return {int(oid): masks[i] for i, oid in enumerate(out.object_ids)}

    def _drop_high_res(self) -> None:
        for per_obj in self._state.output_dict_per_obj.values():
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for out in per_obj[kind].values():
                    out.pop("high_res_masks", None)

    def _trim(self, frame: int, reverse: bool) -> None:
        self._drop_high_res()
        keep = self.max_cached_frames
        if keep <= 0:
            return
        for per_obj in self._state.output_dict_per_obj.values():
            tracked = per_obj["non_cond_frame_outputs"]
            old = [f for f in tracked if (f > frame + keep if reverse else f < frame - keep)]
            for f in old:
                del tracked[f]

    def _check_known(self, obj_id: int) -> None:
        if obj_id not in self._prompts:
            known = ", ".join(map(str, self._prompts)) or "none"
            raise PromptError(f"unknown object id {obj_id}: the session has objects {known}")


load = Sam3Models.load
