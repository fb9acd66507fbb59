"""Typed configuration: YAML + `${paths.ckpt_root}` interpolation + env and `--set` overrides.

`load_config()` merges, in order: the YAML file (default `configs/body4d.yaml`), the environment
(`BODY4D_CKPT_ROOT`, `BODY4D_OUTPUT_DIR`) and dotted `key=value` overrides; it then validates
every key and value against the dataclasses below and raises one `ConfigError` that lists every
problem with its fix.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "body4d.yaml"

ENV_OVERRIDES = {"BODY4D_CKPT_ROOT": "paths.ckpt_root", "BODY4D_OUTPUT_DIR": "runtime.output_dir"}

Device = str
DType = Literal["fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """Invalid configuration; `problems` lists every bad key with its fix."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")


@dataclass(frozen=True)
class PathsConfig:
    ckpt_root: str = "./checkpoints"


@dataclass(frozen=True)
class RuntimeConfig:
    output_dir: str = "./outputs"
    device: Device = "auto"
    dtype: DType = "bf16"
    seed: int = 23
    smpl_export: bool = False


@dataclass(frozen=True)
class VideoConfig:
    max_frames: int = 1800
    max_side: int = 0
    folder_fps: float = 30.0
    jpeg_quality: int = 95
    crf: int = 18


@dataclass(frozen=True)
class Sam3Config:
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
class Sam3DBodyConfig:
    ckpt_path: str = "${paths.ckpt_root}/sam-3d-body-dinov3/model.ckpt"
    config_path: str = "${paths.ckpt_root}/sam-3d-body-dinov3/model_config.yaml"
    mhr_path: str = "${paths.ckpt_root}/sam-3d-body-dinov3/assets/mhr_model.pt"
    fov_path: str = "${paths.ckpt_root}/moge-2-vitl-normal/model.pt"
    batch_size: int = 64
    inference_type: Literal["full", "body"] = "full"
    bbox_padding: float = 1.25
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    mask_value: int = 1
    detector_path: str = ""
    segmentor_path: str = ""


@dataclass(frozen=True)
class CameraConfig:
    num_frames: int = 5
    resolution_level: int = 9


@dataclass(frozen=True)
class CompletionConfig:
    enable: bool = False
    model_path_mask: str = "${paths.ckpt_root}/diffusion-vas-amodal-segmentation"
    model_path_rgb: str = "${paths.ckpt_root}/diffusion-vas-content-completion"
    model_path_depth: str = "${paths.ckpt_root}/depth-anything-v2-large-hf"
    depth_encoder: Literal["vits", "vitb", "vitl", "vitg"] = "vitl"
    detection_resolution: tuple[int, int] = (512, 1024)
    completion_resolution: tuple[int, int] = (512, 1024)
    max_occ_len: int = 25
    iou_threshold: float = 0.7
    window_margin: int = 2
    border_fraction: float = 0.05
    max_box_fraction: float = 0.7
    min_box_aspect: float = 0.2
    num_inference_steps: int = 25
    guidance_scale: float = 1.5
    fps: int = 8
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int = 8


@dataclass(frozen=True)
class SmoothingConfig:
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
    backend: Literal["auto", "egl", "software"] = "auto"
    alpha: float = 0.9


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    max_video_seconds: float = 0
    examples_dir: str = "./assets/examples"


@dataclass(frozen=True)
class Config:
    """The whole configuration (frozen). Paths are absolute strings after `load_config`."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    sam3: Sam3Config = field(default_factory=Sam3Config)
    sam_3d_body: Sam3DBodyConfig = field(default_factory=Sam3DBodyConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    app: AppConfig = field(default_factory=AppConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for the manifest snapshot)."""
        return _jsonable(dataclasses.asdict(self))

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted overrides applied, e.g. ``cfg.replace(**{"sam3.redetect_every": 5})``."""
        merged = OmegaConf.merge(OmegaConf.create(self.to_dict()), _dotted_to_conf(overrides, "replace"))
        return _build(OmegaConf.to_container(merged, resolve=True), "replace()")


# Ranges checked beyond types: (section, key) -> (predicate, fix)
_RANGES: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("video", "max_frames"): (lambda v: v >= 0, "use 0 (unlimited) or a positive frame count"),
    ("video", "max_side"): (lambda v: v == 0 or v >= 16, "use 0 (native) or a side of at least 16 px"),
    ("video", "folder_fps"): (lambda v: 0 < v <= 1000, "use a frame rate between 0 and 1000"),
    ("video", "jpeg_quality"): (lambda v: 1 <= v <= 100, "use a JPEG quality between 1 and 100"),
    ("video", "crf"): (lambda v: 0 <= v <= 51, "use an H.264 CRF between 0 and 51"),
    ("sam3", "detection_threshold"): (lambda v: 0 <= v <= 1, "use a score between 0 and 1"),
    ("sam3", "redetect_every"): (lambda v: v >= 0, "use 0 (first frame only) or a positive frame count"),
    ("sam3", "redetect_iou"): (lambda v: 0 < v <= 1, "use an IoU in (0, 1]"),
    ("sam3", "max_cached_frames"): (lambda v: v >= 0, "use 0 (keep all) or a positive frame count"),
    ("sam3", "vision_cache_frames"): (lambda v: v >= 1, "use at least 1 frame"),
    ("sam3", "frame_cache"): (lambda v: v >= 1, "use at least 1 frame"),
    ("sam3", "detection_nms_iou"): (lambda v: 0 < v <= 1, "use an IoU in (0, 1]"),
    ("sam3", "detection_mask_threshold"): (lambda v: 0 < v < 1, "use a probability strictly between 0 and 1"),
    ("sam_3d_body", "batch_size"): (lambda v: v >= 1, "use a batch size of at least 1"),
    ("sam_3d_body", "bbox_padding"): (lambda v: v >= 1.0, "use a padding factor of at least 1.0"),
    ("sam_3d_body", "mask_value"): (lambda v: v in (1, 255), "use 1 (default) or 255"),
    ("camera", "num_frames"): (lambda v: v >= 1, "use at least 1 frame"),
    ("camera", "resolution_level"): (lambda v: 0 <= v <= 9, "use a level from 0 to 9"),
    ("smoothing", "tangent_window"): (lambda v: v >= 2, "use at least 2 frames"),
    ("completion", "detection_resolution"): (
        lambda v: all(x > 0 and x % 64 == 0 for x in v),
        "use [H, W] with both multiples of 64 (the VAS UNet needs it)",
    ),
    ("completion", "completion_resolution"): (
        lambda v: all(x > 0 and x % 64 == 0 for x in v),
        "use [H, W] with both multiples of 64 (the VAS UNet needs it)",
    ),
    ("completion", "max_occ_len"): (lambda v: v >= 1, "use at least 1 frame"),
    ("completion", "iou_threshold"): (lambda v: 0 < v < 1, "use an IoU strictly between 0 and 1"),
    ("completion", "window_margin"): (lambda v: v >= 0, "use 0 or more frames"),
    ("completion", "border_fraction"): (lambda v: 0 <= v < 0.5, "use a fraction in [0, 0.5)"),
    ("completion", "num_inference_steps"): (lambda v: v >= 1, "use at least 1 step"),
    ("completion", "decode_chunk_size"): (lambda v: v >= 1, "use at least 1 frame"),
    ("smoothing", "min_cutoff"): (lambda v: v > 0, "use a positive cutoff in Hz"),
    ("smoothing", "beta"): (lambda v: v >= 0, "use a non-negative speed coefficient"),
    ("smoothing", "d_cutoff"): (lambda v: v > 0, "use a positive cutoff in Hz"),
    ("smoothing", "max_gap"): (lambda v: v >= 0, "use 0 or more frames"),
    ("render", "alpha"): (lambda v: 0 <= v <= 1, "use an opacity between 0 and 1"),
    ("app", "port"): (lambda v: 1 <= v <= 65535, "use a TCP port between 1 and 65535"),
    ("app", "max_video_seconds"): (lambda v: v >= 0, "use 0 (unlimited) or a positive duration"),
}

_PATH_KEYS = {
    ("paths", "ckpt_root"),
    ("runtime", "output_dir"),
    ("sam3", "ckpt_path"),
    ("sam_3d_body", "ckpt_path"),
    ("sam_3d_body", "config_path"),
    ("sam_3d_body", "mhr_path"),
    ("sam_3d_body", "fov_path"),
    ("completion", "model_path_mask"),
    ("completion", "model_path_rgb"),
    ("completion", "model_path_depth"),
    ("app", "examples_dir"),
}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    env: typing.Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Args:
        path: YAML file; `None` means `configs/body4d.yaml` of the repository.
        overrides: dotted ``"key=value"`` strings (values parsed as YAML) or a dict of them.
        env: environment to read `BODY4D_*` overrides from (default `os.environ`).

    Returns:
        The validated, frozen `Config` with interpolations resolved and paths absolute.

    Raises:
        ConfigError: listing every unknown key, wrong type, out-of-range value or unreadable file.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    env = os.environ if env is None else env
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist: pass an existing YAML file or omit --config"])
    try:
        base = OmegaConf.create(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError([f"{path} is not valid YAML ({exc}): fix the syntax"], str(path)) from exc
    layers = [base]
    env_layer = {key: env[var] for var, key in ENV_OVERRIDES.items() if env.get(var)}
    if env_layer:
        layers.append(_dotted_to_conf(env_layer, "environment"))
    if overrides:
        if isinstance(overrides, dict):
            layers.append(_dotted_to_conf(overrides, "overrides"))
        else:
            layers.append(_dotted_to_conf(_parse_set(overrides), "--set"))
    merged = OmegaConf.merge(*layers)
    try:
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(
            [f"cannot resolve an interpolation ({exc}): check the ${{...}} references"], str(path)
        ) from exc
    return _build(raw, str(path))


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not key=value: write e.g. --set sam3.redetect_every=10")
            continue
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    if problems:
        raise ConfigError(problems, "--set")
    return out


def _dotted_to_conf(items: dict[str, Any], source: str):
    tree: dict[str, Any] = {}
    for dotted, value in items.items():
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return OmegaConf.create(tree)


def _build(raw: Any, source: str) -> Config:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(["the config must be a mapping of sections (paths:, runtime:, ...)"], source)
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built: dict[str, Any] = {}
    for name in raw:
        if name not in sections:
            problems.append(f"unknown section {name!r}: valid sections are {', '.join(sections)}")
    for name, sec_field in sections.items():
        cls = sec_field.default_factory()  # type: ignore[misc]
        cls_type = type(cls)
        values = raw.get(name, {})
        if values is None:
            values = {}
        if not isinstance(values, dict):
            problems.append(f"{name} must be a mapping of keys, got {type(values).__name__}")
            built[name] = cls
            continue
        hints = typing.get_type_hints(cls_type)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in hints:
                valid = ", ".join(hints)
                problems.append(f"unknown key {name}.{key}: valid keys of {name} are {valid}")
                continue
            ok, coerced, why = _check_type(value, hints[key])
            if not ok:
                problems.append(f"{name}.{key} = {value!r} {why}")
                continue
            rng = _RANGES.get((name, key))
            if rng and not rng[0](coerced):
                problems.append(f"{name}.{key} = {value!r} is out of range: {rng[1]}")
                continue
            if (name, key) in _PATH_KEYS and coerced:
                coerced = str(_absolute(coerced))
            kwargs[key] = coerced
        for key in hints:
            if key not in kwargs and (name, key) in _PATH_KEYS:
                default = getattr(cls, key)
                if default and "${" not in default:
                    kwargs[key] = str(_absolute(default))
        built[name] = cls_type(**{**dataclasses.asdict(cls), **kwargs})
    if problems:
        raise ConfigError(problems, source)
    cfg = Config(**built)
    return _resolve_defaults(cfg)


def _resolve_defaults(cfg: Config) -> Config:
    """Resolve `${paths.ckpt_root}` in defaults of keys the YAML did not set."""
    root = cfg.paths.ckpt_root
    updates: dict[str, Any] = {}
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        changes = {}
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, str) and "${paths.ckpt_root}" in value:
                changes[f.name] = str(_absolute(value.replace("${paths.ckpt_root}", root)))
        if changes:
            updates[sec.name] = dataclasses.replace(section, **changes)
    return dataclasses.replace(cfg, **updates) if updates else cfg


def _absolute(p: str) -> Path:
    path = Path(os.path.expanduser(p))
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def _check_type(value: Any, hint: Any) -> tuple[bool, Any, str]:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return True, value, ""
        return False, None, f"is not one of {', '.join(map(repr, choices))}: pick one of them"
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            return False, None, f"must be a list of {len(args)} values, e.g. [512, 1024]"
        out = []
        for v, a in zip(value, args, strict=True):
            ok, c, why = _check_type(v, a)
            if not ok:
                return False, None, why
            out.append(c)
        return True, tuple(out), ""
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(hint):
            ok, c, _ = _check_type(value, a)
            if ok:
                return True, c, ""
        return False, None, f"has the wrong type (expected {hint})"
    if hint is bool:
        if isinstance(value, bool):
            return True, value, ""
        return False, None, "must be true or false"
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value, ""
        return False, None, "must be an integer"
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value), ""
        return False, None, "must be a number"
    if hint is str:
        if isinstance(value, str):
            return True, value, ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, str(value), ""
        return False, None, "must be a string"
    return True, value, ""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
