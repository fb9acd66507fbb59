"""Typed configuration: OmegaConf structured configs over frozen dataclasses, one error listing every problem.

The dataclasses below are the schema and their defaults are the defaults; the shipped YAML
(`body4d/configs/body4d.yaml`, package data) documents every key with the same values (a test keeps
them equal). `load_config()` reads ONE YAML file, the first that applies:

1. the ``path`` argument (``--config FILE``);
2. the file named by the ``BODY4D_CONFIG`` environment variable;
3. the user config ``$XDG_CONFIG_HOME/body4d/body4d.yaml`` (``~/.config/body4d/body4d.yaml``) if it
   exists; ``scripts/setup.py`` writes ``paths.ckpt_root`` there;
4. the shipped default.

On top of the schema defaults it merges that file, then the environment (``BODY4D_CKPT_ROOT``,
``BODY4D_OUTPUT_DIR``), then dotted ``key=value`` overrides (``--set``); later layers win. Each
entry is merged into the schema on its own, so that one `ConfigError` lists every unknown key,
wrong type, non-finite number, out-of-range value, broken interpolation, unreadable file and bad
``--set`` with its fix. OmegaConf's conversions apply ("3" is an integer, yes/on/1 are true).
``${paths.ckpt_root}`` interpolations are resolved and relative paths made absolute against
`REPO_ROOT`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from body4d.errors import InputError
from models.frames import MAX_OBJ_ID

_SOURCE_TREE = Path(__file__).resolve().parent.parent
# Relative paths in a config resolve against the source checkout when body4d runs from one (in place
# or as an editable install); an installed copy (site-packages) has no repository, so they resolve
# against the directory the process started in.
REPO_ROOT = _SOURCE_TREE if (_SOURCE_TREE / "pyproject.toml").is_file() else Path.cwd()
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "body4d.yaml"
CONFIG_ENV = "BODY4D_CONFIG"
ENV_OVERRIDES = {"BODY4D_CKPT_ROOT": "paths.ckpt_root", "BODY4D_OUTPUT_DIR": "runtime.output_dir"}
# The full shipped config is ~15 KB; a file far larger is a mistake (or a YAML bomb) and is
# refused unread rather than parsed.
MAX_CONFIG_BYTES = 2**18
# libyaml's parser when PyYAML has it (about 10x faster on big files), else the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(InputError):
    """Invalid configuration; `problems` lists every bad key with its fix."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")


# Every key is documented in body4d/configs/body4d.yaml.


@dataclass(frozen=True)
class PathsConfig:
    """``paths:`` where the checkpoints are."""

    ckpt_root: str = "./checkpoints"


@dataclass(frozen=True)
class RuntimeConfig:
    """``runtime:`` output folder, device and network precision."""

    output_dir: str = "./outputs"
    device: str = "auto"
    dtype: Literal["fp32", "bf16", "fp16"] = "bf16"
    offload: Literal["auto", "never", "always"] = "auto"
    offload_margin_gb: float = 6.0
    queue_depth: int = 4


@dataclass(frozen=True)
class VideoConfig:
    """``video:`` input limits and output encoding."""

    # 5 minutes at 30 fps: what memory allows (a run grows by ~0.12 MB per frame past its ~2.3 GB)
    # with the disk use checked before a run (body4d.disk_use; figures in the YAML, benchmarks/README.md).
    max_frames: int = 9000
    max_side: int = 0
    folder_fps: float = 30.0
    jpeg_quality: int = 95
    crf: int = 18
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = "veryfast"


@dataclass(frozen=True)
class OutputsConfig:
    """``outputs:`` optional per-frame image folders of the masks stage (``masks/`` is always written)."""

    frame_images: bool = False
    mask_images: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """``limits:`` the largest input accepted; anything bigger is refused before any model loads."""

    max_frame_pixels: int = 7680 * 4320  # 8K UHD (4x 4K): the largest frames cameras record
    max_people: int = 64
    max_clicks: int = 2000


@dataclass(frozen=True)
class Sam3Config:
    """``sam3:`` SAM-3 tracking and person detection."""

    ckpt_path: str = "${paths.ckpt_root}/sam3"
    detection_threshold: float = 0.5
    detection_prompt: str = "person"
    redetect_every: int = 30
    redetect_iou: float = 0.3
    mask_threshold: float = 0.0
    max_cached_frames: int = 16
    vision_cache_frames: int = 2
    frame_cache: int = 4
    detection_nms_iou: float = 0.5
    detection_mask_threshold: float = 0.5


@dataclass(frozen=True)
class RepairConfig:
    """``repair:`` re-propagating one corrected target after Mask Generation."""

    agree_iou: float = 0.9
    agree_frames: int = 3


@dataclass(frozen=True)
class Sam3DBodyConfig:
    """``sam_3d_body:`` mesh recovery (SAM-3D-Body)."""

    ckpt_path: str = "${paths.ckpt_root}/sam-3d-body-dinov3/model.ckpt"
    config_path: str = "${paths.ckpt_root}/sam-3d-body-dinov3/model_config.yaml"
    mhr_path: str = "${paths.ckpt_root}/sam-3d-body-dinov3/assets/mhr_model.pt"
    batch_size: int = 64
    inference_type: Literal["full", "body"] = "full"
    bbox_padding: float = 1.25
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    mask_value: int = 1


@dataclass(frozen=True)
class CameraConfig:
    """``camera:`` MoGe-2 intrinsics estimation."""

    ckpt_path: str = "${paths.ckpt_root}/moge-2-vitl-normal/model.pt"
    num_frames: int = 5
    resolution_level: int = 9


@dataclass(frozen=True)
class CompletionConfig:
    """``completion:`` occlusion detection and completion (Diffusion-VAS + Depth Anything V2)."""

    enable: bool = False
    mode: Literal["candidates", "all"] = "candidates"
    model_path_mask: str = "${paths.ckpt_root}/diffusion-vas-amodal-segmentation"
    model_path_rgb: str = "${paths.ckpt_root}/diffusion-vas-content-completion"
    model_path_depth: str = "${paths.ckpt_root}/depth-anything-v2-large-hf"
    detection_size: int = 512
    completion_size: int = 512
    num_inference_steps: int = 25
    guidance_scale: float = 1.5
    fps: int = 8
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int = 8
    min_frames: int = 16
    max_occ_len: int = 25
    window_pad: int = 2
    batch_windows: int = 4
    seed: int = 23
    legacy: bool = True
    iou_threshold: float = 0.7
    border_fraction: float = 0.05
    max_box_fraction: float = 0.7
    min_aspect: float = 0.2
    area_drop: float = 0.65
    area_window: int = 12
    contact_radius: int = 3
    contact_fraction: float = 0.02
    box_overlap: float = 0.2
    keypoint_jump: float = 2.5
    truncation: bool = False


@dataclass(frozen=True)
class SmoothingConfig:
    """``smoothing:`` per-identity temporal smoothing, gap filling and shape lock."""

    enable: bool = True
    min_cutoff: float = 1.0
    beta: float = 1.0
    d_cutoff: float = 1.0
    max_gap: int = 30
    lock_shape: bool = True
    fill_mode: Literal["linear", "cubic"] = "cubic"
    zero_phase: bool = True
    tangent_window: int = 5


@dataclass(frozen=True)
class RenderConfig:
    """``render:`` the 4D result videos (meshes over the footage)."""

    enable: bool = True
    background: Literal["video", "white"] = "video"
    individual: bool = True
    frames: bool = False


@dataclass(frozen=True)
class ExportConfig:
    """``export:`` per-frame OBJ meshes and camera records."""

    obj: bool = True
    obj_workers: int = 0


@dataclass(frozen=True)
class BundleConfig:
    """``bundle:`` the per-person bundles (animated GLB, BVH, npz, json) and the scene GLB."""

    glb: bool = True
    glb_max_frames: int = 300
    quantize: bool = True
    bvh: bool = True


@dataclass(frozen=True)
class AppConfig:
    """``app:`` the browser app."""

    host: str = "127.0.0.1"
    port: int = 7860
    max_video_seconds: float = 600.0
    max_upload_mb: float = 1024.0
    examples_dir: str = "./assets/examples"
    examples_list: str = "./body4d/configs/examples.yaml"
    zip_meshes: bool = False
    list_server_runs: bool = False
    retention_run_hours: float = 0.0
    retention_cache_hours: float = 24.0
    retention_gb: float = 0.0
    retention_every_minutes: float = 60.0


@dataclass(frozen=True)
class Config:
    """The whole configuration (frozen). Paths are absolute strings after `load_config`."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    sam3: Sam3Config = field(default_factory=Sam3Config)
    repair: RepairConfig = field(default_factory=RepairConfig)
    sam_3d_body: Sam3DBodyConfig = field(default_factory=Sam3DBodyConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    app: AppConfig = field(default_factory=AppConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for the manifest snapshot)."""
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted overrides applied, e.g. ``cfg.replace(**{"sam3.redetect_every": 5})``.

        Raises:
            ConfigError: listing every bad key or value.
        """
        problems: list[str] = []
        return _build(OmegaConf.structured(self), _dotted_leaves(overrides, problems), problems, "replace()")


# section -> key -> type hint, from the dataclasses above.
_SCHEMA: dict[str, dict[str, Any]] = {
    name: typing.get_type_hints(section) for name, section in typing.get_type_hints(Config).items()
}

# Ranges checked beyond types: (section, key) -> (predicate, fix)
_RANGES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("video", "max_frames"): (lambda v: v >= 0, "use 0 (unlimited) or a positive frame count"),
    ("video", "max_side"): (lambda v: v == 0 or v >= 16, "use 0 (native) or a side of at least 16 px"),
    ("video", "folder_fps"): (lambda v: 1 <= v <= 1000, "use a frame rate from 1 to 1000 fps"),
    ("video", "jpeg_quality"): (lambda v: 1 <= v <= 100, "use a JPEG quality between 1 and 100"),
    ("video", "crf"): (lambda v: 0 <= v <= 51, "use an H.264 CRF between 0 and 51"),
    ("limits", "max_frame_pixels"): (lambda v: v >= 0, "use 0 (unlimited) or a pixel count such as 33177600"),
    ("limits", "max_people"): (
        lambda v: 1 <= v <= MAX_OBJ_ID,
        f"use a number of people from 1 to {MAX_OBJ_ID}",
    ),
    ("limits", "max_clicks"): (lambda v: v >= 1, "use at least 1 click"),
    ("sam3", "detection_threshold"): (lambda v: 0 <= v <= 1, "use a score between 0 and 1"),
    ("sam3", "redetect_every"): (lambda v: v >= 0, "use 0 (first frame only) or a positive frame count"),
    ("sam3", "redetect_iou"): (lambda v: 0 < v <= 1, "use an IoU in (0, 1]"),
    ("sam3", "mask_threshold"): (
        lambda v: -20 <= v <= 20,
        "use a logit from -20 to 20 (0 = probability 0.5)",
    ),
    ("sam3", "max_cached_frames"): (lambda v: v >= 0, "use 0 (keep all) or a positive frame count"),
    ("sam3", "vision_cache_frames"): (lambda v: v >= 1, "use at least 1 frame"),
    ("sam3", "frame_cache"): (lambda v: v >= 1, "use at least 1 frame"),
    ("sam3", "detection_nms_iou"): (lambda v: 0 < v <= 1, "use an IoU in (0, 1]"),
    ("sam3", "detection_mask_threshold"): (lambda v: 0 < v < 1, "use a probability strictly between 0 and 1"),
    ("repair", "agree_iou"): (lambda v: 0 < v <= 1, "use an IoU in (0, 1]"),
    ("repair", "agree_frames"): (lambda v: v >= 1, "use at least 1 frame"),
    ("sam_3d_body", "batch_size"): (lambda v: v >= 1, "use a batch size of at least 1"),
    ("sam_3d_body", "bbox_padding"): (lambda v: 1.0 <= v <= 10.0, "use a padding factor from 1.0 to 10.0"),
    ("sam_3d_body", "mask_value"): (lambda v: v in (1, 255), "use 1 (default) or 255"),
    ("camera", "num_frames"): (lambda v: v >= 1, "use at least 1 frame"),
    ("camera", "resolution_level"): (lambda v: 0 <= v <= 9, "use a level from 0 to 9"),
    ("completion", "detection_size"): (
        lambda v: v >= 64 and v % 64 == 0,
        "use a multiple of 64 (512 = the release)",
    ),
    ("completion", "completion_size"): (
        lambda v: v >= 64 and v % 64 == 0,
        "use a multiple of 64 (512 = the release)",
    ),
    ("completion", "num_inference_steps"): (lambda v: v >= 1, "use at least 1 step"),
    ("completion", "guidance_scale"): (lambda v: 1.0 <= v <= 100.0, "use 1.0 (no guidance) to 100.0"),
    ("completion", "fps"): (lambda v: v >= 1, "use a frame rate of at least 1"),
    ("completion", "motion_bucket_id"): (lambda v: 0 <= v <= 255, "use a motion bucket between 0 and 255"),
    ("completion", "noise_aug_strength"): (lambda v: 0 <= v <= 1, "use a strength between 0 and 1"),
    ("completion", "decode_chunk_size"): (lambda v: v >= 1, "use at least 1 frame"),
    ("completion", "min_frames"): (lambda v: v >= 1, "use at least 1 frame (16 = the model's context)"),
    ("completion", "max_occ_len"): (lambda v: v >= 1, "use at least 1 frame"),
    ("completion", "window_pad"): (lambda v: v >= 0, "use 0 or more frames"),
    ("completion", "batch_windows"): (lambda v: v >= 1, "use at least 1 window per call"),
    ("completion", "seed"): (lambda v: v >= 0, "use a non-negative integer seed"),
    ("completion", "iou_threshold"): (lambda v: 0 < v <= 1, "use an IoU in (0, 1]"),
    ("completion", "border_fraction"): (lambda v: 0 <= v < 0.5, "use a fraction in [0, 0.5)"),
    ("completion", "max_box_fraction"): (lambda v: 0 < v <= 1, "use a fraction in (0, 1]"),
    ("completion", "min_aspect"): (lambda v: 0 <= v <= 1, "use an aspect ratio in [0, 1]"),
    ("completion", "area_drop"): (lambda v: 0 < v <= 1, "use a fraction in (0, 1]"),
    ("completion", "area_window"): (lambda v: v >= 1, "use at least 1 frame"),
    ("completion", "contact_radius"): (lambda v: v >= 1, "use at least 1 pixel"),
    ("completion", "contact_fraction"): (lambda v: 0 < v <= 1, "use a fraction in (0, 1]"),
    ("completion", "box_overlap"): (lambda v: 0 < v <= 1, "use a fraction in (0, 1]"),
    ("completion", "keypoint_jump"): (lambda v: v > 1, "use a ratio above 1"),
    ("smoothing", "min_cutoff"): (lambda v: v > 0, "use a positive cutoff in Hz"),
    ("smoothing", "beta"): (lambda v: v >= 0, "use a non-negative speed coefficient"),
    ("smoothing", "d_cutoff"): (lambda v: v > 0, "use a positive cutoff in Hz"),
    ("smoothing", "max_gap"): (lambda v: v >= 0, "use 0 or more frames"),
    ("smoothing", "tangent_window"): (lambda v: v >= 2, "use at least 2 frames"),
    ("bundle", "glb_max_frames"): (lambda v: v >= 2, "use at least 2 frames"),
    ("runtime", "device"): (
        lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
        "use auto, cpu, mps, cuda or cuda:N",
    ),
    ("runtime", "offload_margin_gb"): (lambda v: 0 <= v <= 1024, "use 0 to 1024 GB of working memory"),
    ("runtime", "queue_depth"): (lambda v: 0 <= v <= 64, "use 0 (one step after another) to 64 items"),
    ("export", "obj_workers"): (lambda v: v >= 0, "use 0 (one per spare core, at most 4) or a process count"),
    ("app", "port"): (lambda v: 1 <= v <= 65535, "use a TCP port between 1 and 65535"),
    ("app", "max_video_seconds"): (lambda v: v >= 0, "use 0 (unlimited) or a positive duration"),
    ("app", "max_upload_mb"): (lambda v: v >= 0, "use 0 (unlimited) or a size in MB"),
    ("app", "retention_run_hours"): (lambda v: v >= 0, "use 0 (keep runs) or an age in hours"),
    ("app", "retention_cache_hours"): (lambda v: v >= 0, "use 0 (keep uploads) or an age in hours"),
    ("app", "retention_gb"): (lambda v: v >= 0, "use 0 (no size limit) or a size in GB"),
    ("app", "retention_every_minutes"): (lambda v: v > 0, "use a positive number of minutes"),
}

# Filesystem paths: made absolute (against REPO_ROOT) after interpolation; "" stays "" (disabled).
_PATH_KEYS = (
    ("paths", "ckpt_root"),
    ("runtime", "output_dir"),
    ("sam3", "ckpt_path"),
    ("sam_3d_body", "ckpt_path"),
    ("sam_3d_body", "config_path"),
    ("sam_3d_body", "mhr_path"),
    ("camera", "ckpt_path"),
    ("completion", "model_path_mask"),
    ("completion", "model_path_rgb"),
    ("completion", "model_path_depth"),
    ("app", "examples_dir"),
    ("app", "examples_list"),
)

# Longest value quoted in a problem (a pasted list or a huge number would drown the message).
_SHOWN_CHARS = 80

# What a value of each scalar type must look like (the wording of a type problem).
_EXPECTED = {
    bool: "must be true or false",
    int: "must be an integer",
    float: "must be a number",
    str: "must be a string",
}


def user_config(env: Mapping[str, str] | None = None) -> Path | None:
    """The user config: ``$XDG_CONFIG_HOME/body4d/body4d.yaml``, else ``$HOME/.config/body4d/body4d.yaml``.

    Args:
        env: environment to read ``XDG_CONFIG_HOME`` / ``HOME`` from (default `os.environ`).

    Returns:
        The path (which may not exist yet), or None when ``env`` names neither folder.
    """
    env = os.environ if env is None else env
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "body4d" / "body4d.yaml"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config" / "body4d" / "body4d.yaml"
    return None


def find_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The YAML file `load_config` reads: the first of ``path``, ``$BODY4D_CONFIG``, an existing user config.

    Without any of them, the shipped default `DEFAULT_CONFIG`.

    Args:
        path: an explicit file (``--config``).
        env: environment to read ``BODY4D_CONFIG`` and the user config folders from (default `os.environ`).
    """
    return _choose_file(path, os.environ if env is None else env)[0]


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Args:
        path: YAML file (``--config``); None picks ``$BODY4D_CONFIG``, else the user config when it
            exists, else the shipped default `DEFAULT_CONFIG`.
        overrides: dotted ``"key=value"`` strings (values parsed as YAML) or a dict of dotted keys.
        env: the environment: ``BODY4D_CONFIG``, ``BODY4D_CKPT_ROOT``, ``BODY4D_OUTPUT_DIR`` and the
            folders of `user_config` are read from it (default `os.environ`; ``{}`` ignores them all).

    Returns:
        The validated, frozen `Config` with interpolations resolved and paths absolute.

    Raises:
        ConfigError: listing every unknown key, wrong type, non-finite or out-of-range value, broken
            interpolation, unreadable file and malformed override, each with its fix.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    file, missing_fix = _choose_file(path, env)
    leaves = _file_leaves(file, missing_fix, problems)
    leaves |= _dotted_leaves({key: env[var] for var, key in ENV_OVERRIDES.items() if env.get(var)}, problems)
    if isinstance(overrides, dict):
        leaves |= _dotted_leaves(overrides, problems)
    elif overrides:
        leaves |= _dotted_leaves(_parse_set(overrides, problems), problems)
    return _build(OmegaConf.structured(Config), leaves, problems, str(file))


def _choose_file(path: str | Path | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The YAML file to read (see the module doc) and the fix to give if it does not exist."""
    if path is not None:
        return Path(path).expanduser(), "pass an existing YAML file or omit --config"
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser(), f"point {CONFIG_ENV} at an existing YAML file or unset it"
    user = user_config(env)
    if user is not None and user.is_file():
        return user, ""
    return DEFAULT_CONFIG, "reinstall body4d (its default config is missing)"


def _file_leaves(file: Path, missing_fix: str, problems: list[str]) -> dict[tuple[str, str], Any]:
    """The entries of a YAML config file; an absent, unreadable or invalid file is a problem."""
    if not file.is_file():
        problems.append(f"config file {file} does not exist or is not a file: {missing_fix}")
        return {}
    size = file.stat().st_size
    if size > MAX_CONFIG_BYTES:
        problems.append(
            f"config file {file} is {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have: "
            "keep only the keys you change"
        )
        return {}
    try:
        tree = _parse_yaml(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"config file {file} cannot be read ({exc}): make it a readable UTF-8 YAML file")
        return {}
    except _AliasError as exc:
        problems.append(f"{file} {exc}")
        return {}
    except ValueError as exc:  # an integer of more digits than int() takes
        problems.append(f"{file} holds an unusable number ({exc}): write a value of sensible size")
        return {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problems.append(
            f"{file} is not valid YAML ({getattr(exc, 'problem', None) or exc}{at}): fix the syntax"
        )
        return {}
    return _leaves(tree if tree is not None else {}, problems)


def _parse_set(items: list[str], problems: list[str]) -> dict[str, Any]:
    """``["a.b=value", ...]`` as ``{"a.b": value}`` with values parsed as YAML (a string if unparsable)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not key=value: write e.g. --set sam3.redetect_every=10")
            continue
        try:
            out[key.strip()] = _parse_yaml(value) if value.strip() else ""
        except _AliasError as exc:
            problems.append(f"override {item!r} {exc}")
        except (yaml.YAMLError, ValueError):  # ValueError: an integer of more digits than int() takes
            out[key.strip()] = value
    return out


class _AliasError(yaml.YAMLError):
    """A YAML anchor or alias in a config (the message continues a sentence naming the source)."""


def _parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML (safe loader), refusing anchors and aliases.

    No shipped config uses them, and they are how a few bytes of YAML expand into a recursive
    structure or billions of nodes; the event scan is linear in the text, before anything is built.

    Raises:
        _AliasError: an ``&anchor`` or ``*alias``, with its line.
        yaml.YAMLError: invalid YAML.
    """
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise _AliasError(
                f"uses a YAML anchor or alias at line {line}: write the values out (configs may not use & or *)"
            )
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)


def _dotted_leaves(items: Mapping[str, Any], problems: list[str]) -> dict[tuple[str, str], Any]:
    """Entries of ``{"section.key": value}``; unknown keys are problems."""
    leaves: dict[tuple[str, str], Any] = {}
    for dotted, value in items.items():
        tree = value
        for part in reversed(dotted.split(".")):
            tree = {part: tree}
        leaves |= _leaves(tree, problems)
    return leaves


def _leaves(tree: Any, problems: list[str]) -> dict[tuple[str, str], Any]:
    """``{section: {key: value}}`` as ``{(section, key): value}``; bad entries are problems."""
    if not isinstance(tree, dict):
        problems.append("the config must be a mapping of sections (paths:, runtime:, ...)")
        return {}
    leaves: dict[tuple[str, str], Any] = {}
    for name, values in tree.items():
        if name not in _SCHEMA:
            problems.append(f"unknown section {name!r}: valid sections are {', '.join(_SCHEMA)}")
        elif isinstance(values, dict):
            for key, value in values.items():
                if key in _SCHEMA[name] and isinstance(value, dict | list):
                    # Every key is a scalar; a container is refused here, since OmegaConf takes
                    # seconds per 10,000 items to find that out.
                    problems.append(_type_problem(f"{name}.{key}", value, _SCHEMA[name][key]))
                elif key in _SCHEMA[name]:
                    leaves[(name, key)] = value
                else:
                    problems.append(
                        f"unknown key {name}.{key}: valid keys of {name} are {', '.join(_SCHEMA[name])}"
                    )
        elif values is not None:  # an empty section (every key commented out) keeps the defaults
            problems.append(f"{name} must be a mapping of keys, got {type(values).__name__}")
    return leaves


def _build(base: DictConfig, leaves: dict[tuple[str, str], Any], problems: list[str], source: str) -> Config:
    """Merge ``leaves`` into the structured ``base``, check every value, return the typed config.

    Raises:
        ConfigError: with ``problems`` and every problem found here.
    """
    try:
        conf = OmegaConf.merge(base, _tree(leaves))
    except OmegaConfBaseException:  # OmegaConf stops at the first bad entry: merge each alone to find all
        accepted: dict[tuple[str, str], Any] = {}
        for (name, key), value in leaves.items():
            try:
                OmegaConf.merge(base[name], {key: value})
            except OmegaConfBaseException:
                problems.append(_type_problem(f"{name}.{key}", value, _SCHEMA[name][key]))
            else:
                accepted[(name, key)] = value
        conf = OmegaConf.merge(base, _tree(accepted))
    for name, hints in _SCHEMA.items():
        raw = OmegaConf.to_container(conf[name], resolve=False)
        for key, hint in hints.items():
            problem = _value_problem(conf[name], name, key, hint, raw[key])
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigError(problems, source)
    return _absolute_paths(OmegaConf.to_object(conf))


def _tree(leaves: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    """``{(section, key): value}`` back to ``{section: {key: value}}``."""
    tree: dict[str, dict[str, Any]] = {}
    for (name, key), value in leaves.items():
        tree.setdefault(name, {})[key] = value
    return tree


def _type_problem(name: str, value: Any, hint: Any) -> str:
    """The problem of a value OmegaConf cannot convert to ``hint``, with what to write instead."""
    if isinstance(value, str) and "${" in value:
        return (
            f"{name} = {_shown(value)} is not a valid interpolation: write it like ${{paths.ckpt_root}}/sam3"
        )
    if typing.get_origin(hint) is Literal:
        choices = ", ".join(map(repr, typing.get_args(hint)))
        return f"{name} = {_shown(value)} is not one of {choices}: pick one of them"
    return f"{name} = {_shown(value)} {_EXPECTED[hint]}"


def _shown(value: Any) -> str:
    """``repr(value)`` cut to `_SHOWN_CHARS`: a problem stays one readable line whatever was written."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _value_problem(section: DictConfig, name: str, key: str, hint: Any, raw: Any) -> str | None:
    """Why the (interpolated) value of ``name.key`` is unusable, or None."""
    try:
        value = section[key]
    except OmegaConfBaseException as exc:
        reason = str(exc).splitlines()[0]
        return f"{name}.{key} = {_shown(raw)} cannot be resolved ({reason}): fix the ${{...}} reference"
    check = _RANGES.get((name, key))
    if hint is float and not math.isfinite(value):
        fix = check[1] if check else "use a finite number"
        return f"{name}.{key} = {_shown(raw)} is not a finite number: {fix}"
    if check and not check[0](value):
        return f"{name}.{key} = {_shown(raw)} is out of range: {check[1]}"
    return None


def _absolute_paths(cfg: Config) -> Config:
    """``cfg`` with every non-empty path key absolute (relative ones against `REPO_ROOT`)."""
    changes: dict[str, dict[str, str]] = {}
    for name, key in _PATH_KEYS:
        value = getattr(getattr(cfg, name), key)
        if value:
            changes.setdefault(name, {})[key] = str(_absolute(value))
    return dataclasses.replace(
        cfg, **{name: dataclasses.replace(getattr(cfg, name), **keys) for name, keys in changes.items()}
    )


def _absolute(p: str) -> Path:
    """``p`` with ``~`` expanded, relative to `REPO_ROOT` unless absolute."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``, as every body4d command takes them."""
    parser.add_argument(
        "--config",
        default=None,
        help=f"YAML config (default: ${CONFIG_ENV}, else the user config, else the shipped body4d.yaml)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
