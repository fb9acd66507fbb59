"""Deep verification of the checkpoint folders: is every file there, intact, and what its loader expects?

`checkpoints` lists the checkpoints a configuration uses (short names `NAMES`, the Hugging Face
repository, the local folder, and the files the loaders read); `verify` checks one folder at four
levels and returns a `Verification` naming every failure and its file:

1. presence: every file the loader reads is there and not empty;
2. bytes: the size and sha256 published for the real file (`PUBLISHED`, from
   research/real-checkpoints.md), and the sha256 the Hub reported when the file was downloaded: the
   ETag of an LFS file, kept in its download record (`DownloadRecord`) by ``scripts/setup.py`` and by
   huggingface_hub's ``local_dir`` downloads;
3. format: JSON and YAML configs parse, safetensors headers read, state dicts open with
   ``torch.load(weights_only=True, mmap=True)``, the MHR body model with ``torch.jit.load``;
4. fit, the loaders' own checks where they are cheap: SAM-3's ``model_type``, transformers config
   class and detector/tracker weights; every SAM-3D-Body key and shape against the port built from
   ``model_config.yaml`` on the meta device; every MoGe-2 key and shape against the model its
   ``model_config`` builds (uninitialised); the Diffusion-VAS pipeline layout and its 12-channel
   ``conv_in2``; Depth Anything's transformers config class and relative-depth type.

A tiny test checkpoint (`is_tiny`: its folder is marked with `TINY_MARKER`) cannot have the
published hashes: level 2 reports them as not applicable, every other level runs (the download
record's sha256 included), and its status is "tiny", never "ok".

Hashing the real files (~7.5 GB, ~24 GB with the completion models) takes minutes, so this is for
setup and its ``--check``; `body4d.checkpoints.checkpoint_report` stays the cheap presence check of
the status panel.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from body4d.config import Config
from body4d.examples import file_sha256
from body4d.run_dir import atomic_write_bytes
from models.errors import TINY_MARKER, CheckpointError, format_keys

# The short names of `checkpoints`, in setup order (``scripts/setup.py --only``).
NAMES = ("sam3", "sam-3d-body", "moge", "vas-amodal", "vas-completion", "depth")
# Checkpoints needed only when ``completion.enable`` is set.
COMPLETION_NAMES = ("vas-amodal", "vas-completion", "depth")

OK, TINY, MISSING, BROKEN = "ok", "tiny", "missing", "broken"

# Where huggingface_hub's ``local_dir`` downloads keep one record per file (its _local_folder module).
RECORD_DIR = Path(".cache") / "huggingface" / "download"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Weight prefixes of the transformers facebook/sam3 file (research/sam3-transformers.md); Meta's own
# sam3.pt says detector.* / tracker.* instead.
SAM3_PREFIXES = ("detector_model.", "tracker_model.", "tracker_neck.")
# The diffusers components of a Diffusion-VAS folder (the keys of its model_index.json).
VAS_COMPONENTS = ("unet", "vae", "image_encoder", "scheduler", "feature_extractor")


@dataclass(frozen=True)
class Published:
    """Size and sha256 of a released file, as its published inventories give them."""

    size: int
    sha256: str


# (repository, file) -> the published facts (research/real-checkpoints.md).
PUBLISHED: dict[tuple[str, str], Published] = {
    ("facebook/sam-3d-body-dinov3", "model.ckpt"): Published(
        2_109_129_346, "b5a2f9d305dd02626b967aa2e86021fba07065df66ce7a7e00ffb9664f150abf"
    ),
    ("facebook/sam-3d-body-dinov3", "assets/mhr_model.pt"): Published(
        696_110_248, "352e271a6c42729c68554ceaea0c955e866970160c31e35506d782dc0f7377bc"
    ),
}


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: the files of a Hugging Face repository that body4d's loaders read.

    Attributes:
        name: short name (one of `NAMES`).
        title: human name.
        repo_id: the Hugging Face repository.
        subdir: its folder under ``paths.ckpt_root`` by default (MODELS.md); a mirror holds it there.
        folder: the local folder the config points at.
        files: path in the repository (and in a mirror's ``subdir``) -> local path inside ``folder``.
    """

    name: str
    title: str
    repo_id: str
    subdir: str
    folder: Path
    files: dict[str, Path]

    def local_name(self, name: str) -> str:
        """The local path of repository file ``name`` relative to `folder` (POSIX form)."""
        return self.files[name].relative_to(self.folder).as_posix()


def checkpoints(cfg: Config, names: Sequence[str] | None = None) -> list[Checkpoint]:
    """The checkpoints ``cfg`` points at, in `NAMES` order.

    Args:
        cfg: the configuration (its paths say where each checkpoint lives).
        names: which ones; None = what the pipeline uses: SAM-3, SAM-3D-Body, MoGe-2 when
            ``camera.ckpt_path`` is set, and the completion models when ``completion.enable`` is set.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), MoGe-2 asked for while
            ``camera.ckpt_path`` is empty, or SAM-3D-Body files configured outside one folder.
    """
    from models.depth import CHECKPOINT_FILES as DEPTH_FILES
    from models.diffusion_vas import COMPONENT_FILES
    from models.moge import CHECKPOINT_FILE as MOGE_FILE
    from models.sam3 import SNAPSHOT_FILES

    if names is None:
        names = [n for n in NAMES if n not in COMPLETION_NAMES or cfg.completion.enable]
        if not cfg.camera.ckpt_path:
            names.remove("moge")
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(
            f"unknown checkpoint name(s) {', '.join(unknown)}: valid names are {', '.join(NAMES)}"
        )
    if "moge" in names and not cfg.camera.ckpt_path:
        raise ValueError("camera.ckpt_path is empty, so MoGe-2 is not used: set it, or leave out moge")

    def inside(folder: str | Path, files: Iterable[str]) -> tuple[Path, dict[str, Path]]:
        return Path(folder), {f: Path(folder) / f for f in files}

    body = cfg.sam_3d_body
    c = cfg.completion
    vas = ["model_index.json", *(f"{part}/{f}" for part, fs in COMPONENT_FILES.items() for f in fs)]
    made = {
        "sam3": ("SAM-3", "facebook/sam3", "sam3", *inside(cfg.sam3.ckpt_path, SNAPSHOT_FILES)),
        "sam-3d-body": (
            "SAM-3D-Body",
            "facebook/sam-3d-body-dinov3",
            "sam-3d-body-dinov3",
            Path(body.ckpt_path).parent,
            {
                "model.ckpt": Path(body.ckpt_path),
                "model_config.yaml": Path(body.config_path),
                "assets/mhr_model.pt": Path(body.mhr_path),
            },
        ),
        "moge": (
            "MoGe-2 ViT-L normal",
            "Ruicheng/moge-2-vitl-normal",
            "moge-2-vitl-normal",
            Path(cfg.camera.ckpt_path).parent,
            {MOGE_FILE: Path(cfg.camera.ckpt_path)},
        ),
        "vas-amodal": (
            "Diffusion-VAS amodal segmentation",
            "kaihuac/diffusion-vas-amodal-segmentation",
            "diffusion-vas-amodal-segmentation",
            *inside(c.model_path_mask, vas),
        ),
        "vas-completion": (
            "Diffusion-VAS content completion",
            "kaihuac/diffusion-vas-content-completion",
            "diffusion-vas-content-completion",
            *inside(c.model_path_rgb, vas),
        ),
        "depth": (
            "Depth Anything V2 Large",
            "depth-anything/Depth-Anything-V2-Large-hf",
            "depth-anything-v2-large-hf",
            *inside(c.model_path_depth, DEPTH_FILES),
        ),
    }
    out = []
    for name in (n for n in NAMES if n in names):
        title, repo_id, subdir, folder, files = made[name]
        for path in files.values():
            if not path.is_relative_to(folder):
                raise ValueError(
                    f"{path} is outside {folder}, the folder of the other {title} files: keep them "
                    "together as released (see the sam_3d_body paths of the config)"
                )
        out.append(Checkpoint(name, title, repo_id, subdir, folder, files))
    return out


def is_tiny(folder: Path) -> bool:
    """``folder`` (or one of its two parents) is marked as a tiny random test checkpoint."""
    return any((p / TINY_MARKER).exists() for p in (folder, *folder.parents[:2]))


@dataclass(frozen=True)
class DownloadRecord:
    """What the source reported for a downloaded file: huggingface_hub's ``local_dir`` record.

    Stored as ``<folder>/.cache/huggingface/download/<file>.metadata``, three lines: commit, ETag,
    Unix time of the download. For an LFS file the ETag is the sha256 of its content.

    Attributes:
        commit: the repository commit the file was downloaded at.
        etag: the file's ETag.
    """

    commit: str
    etag: str

    @property
    def sha256(self) -> str | None:
        """The content's sha256 when the ETag is one (LFS files), else None."""
        return self.etag if _SHA256.fullmatch(self.etag) else None

    @staticmethod
    def path(folder: Path, name: str) -> Path:
        """Where the record of ``folder/name`` lives (``name`` relative to ``folder``, POSIX form)."""
        return folder / RECORD_DIR / f"{name}.metadata"

    @classmethod
    def parse(cls, text: str) -> DownloadRecord | None:
        """The record in ``text``, or None when it is not one."""
        lines = text.splitlines()
        if len(lines) < 2 or not lines[0].strip() or not lines[1].strip():
            return None
        return cls(lines[0].strip(), lines[1].strip())

    @classmethod
    def read(cls, folder: Path, name: str) -> DownloadRecord | None:
        """The record of ``folder/name``, or None when there is none (or it is unreadable)."""
        try:
            return cls.parse(cls.path(folder, name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None

    def write(self, folder: Path, name: str) -> None:
        """Store this record for ``folder/name`` (atomically; after the file is in place)."""
        text = f"{self.commit}\n{self.etag}\n{time.time()}\n"
        atomic_write_bytes(self.path(folder, name), text.encode("utf-8"))


@dataclass(frozen=True)
class Verification:
    """The verdict on one checkpoint folder.

    Attributes:
        checkpoint: what was verified.
        status: `OK`, `TINY` (a verified tiny test checkpoint), `MISSING` (files absent, the rest
            intact) or `BROKEN` (a file present but damaged or unfit).
        problems: one sentence per failure, each naming its file.
        notes: checks that did not apply (the published hashes of a tiny checkpoint).
        missing: repository files that are not there.
        refetch: repository files whose bytes are wrong or unreadable: getting them again is the fix.
    """

    checkpoint: Checkpoint
    status: str
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    refetch: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every level passed (the checkpoint may still be a tiny test one)."""
        return self.status in (OK, TINY)


@dataclass
class _Findings:
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refetch: list[str] = field(default_factory=list)

    def damaged(self, name: str, why: str) -> None:
        """``name``'s bytes are wrong or unreadable."""
        self.problems.append(f"{name}: {why}")
        self.refetch.append(name)

    def unfit(self, why: str) -> None:
        """The files read, but do not make what the loader expects."""
        self.problems.append(why)


def verify(checkpoint: Checkpoint, published: dict[tuple[str, str], Published] = PUBLISHED) -> Verification:
    """Check ``checkpoint``'s folder at every level (see the module docstring); nothing is written.

    Levels 3 and 4 run only when levels 1 and 2 pass (they would only repeat a damaged file).

    Args:
        checkpoint: the folder and its files.
        published: (repository, file) -> published size and sha256 (default `PUBLISHED`).
    """
    c = checkpoint
    if not c.folder.is_dir():
        return Verification(c, MISSING, (f"{c.folder} not found",), missing=tuple(c.files))
    tiny = is_tiny(c.folder)
    f = _Findings()
    for name, path in c.files.items():
        if not path.is_file():
            f.missing.append(name)
        elif path.stat().st_size == 0:
            f.damaged(name, "empty file (an interrupted copy?)")
        else:
            _check_bytes(c, name, path, published.get((c.repo_id, name)), tiny, f)
    if f.missing:
        f.problems.insert(0, f"missing {', '.join(f.missing)}")
    if not f.problems:
        _FIT[c.name](c, f)
    status = (BROKEN if f.refetch or not f.missing else MISSING) if f.problems else (TINY if tiny else OK)
    return Verification(c, status, tuple(f.problems), tuple(f.notes), tuple(f.missing), tuple(f.refetch))


def _check_bytes(
    c: Checkpoint, name: str, path: Path, published: Published | None, tiny: bool, f: _Findings
) -> None:
    """Level 2: the published size and sha256, then the sha256 of the download record."""
    sha256 = None
    if published is not None:
        size = path.stat().st_size
        if tiny:
            f.notes.append(f"{name}: tiny test checkpoint, the published size and sha256 do not apply")
        elif size != published.size:
            f.damaged(
                name, f"{size:,} bytes, the published file has {published.size:,} (truncated or another file)"
            )
            return
        else:
            sha256 = file_sha256(path)
            if sha256 != published.sha256:
                f.damaged(name, f"sha256 {sha256} differs from the published {published.sha256}")
                return
    record = DownloadRecord.read(c.folder, c.local_name(name))
    if record is not None and record.sha256 is not None:
        sha256 = sha256 or file_sha256(path)
        if sha256 != record.sha256:
            f.damaged(
                name,
                f"sha256 {sha256} differs from the {record.sha256} the source reported at download "
                "(damaged since, or a bad download)",
            )


def _json(c: Checkpoint, name: str, f: _Findings) -> dict[str, Any] | None:
    """Repository file ``name`` parsed as a JSON object, or None (recorded as damaged)."""
    try:
        data = json.loads(c.files[name].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        f.damaged(name, f"not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        f.damaged(name, f"a JSON {type(data).__name__}, not an object")
        return None
    return data


def _json_files(c: Checkpoint, f: _Findings) -> None:
    for name in c.files:
        if name.endswith(".json"):
            _json(c, name, f)


def _header(c: Checkpoint, name: str, f: _Findings) -> dict[str, list[int]] | None:
    """Tensor name -> shape from a safetensors header (no tensor data read), or None (damaged)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(c.files[name], framework="pt") as st:
            return {key: list(st.get_slice(key).get_shape()) for key in st.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        f.damaged(name, f"unreadable safetensors header ({exc})")
        return None


def _state(c: Checkpoint, name: str, f: _Findings) -> Any:
    """``torch.load`` of repository file ``name`` (weights only, memory-mapped), or None (damaged)."""
    import pickle

    import torch

    path = c.files[name]
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        f.damaged(name, f"torch.load(weights_only=True) fails ({str(exc).strip().splitlines()[0][:200]})")
        return None


def _auto_config(c: Checkpoint, f: _Findings) -> Any:
    """The transformers config of the folder, or None (recorded as unfit)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(c.folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        f.unfit(f"config.json: transformers cannot read it ({str(exc).splitlines()[0]})")
        return None


def _fit_sam3(c: Checkpoint, f: _Findings) -> None:
    from models.sam3 import EXPECTED_MODEL_TYPE, check_checkpoint

    _json_files(c, f)
    if f.problems:
        return
    try:
        check_checkpoint(c.folder)
    except CheckpointError as exc:
        f.unfit(str(exc))
        return
    config = _auto_config(c, f)
    if config is not None and config.model_type != EXPECTED_MODEL_TYPE:
        f.unfit(
            f"config.json: transformers reads a {type(config).__name__}, not a {EXPECTED_MODEL_TYPE!r} config"
        )
    header = _header(c, "model.safetensors", f)
    if header is not None:
        absent = [p for p in SAM3_PREFIXES if not any(k.startswith(p) for k in header)]
        if absent:
            f.unfit(
                f"model.safetensors has no {', '.join(p + '*' for p in absent)} weights: not the transformers "
                "facebook/sam3 checkpoint (tracker and detector)"
            )


def _fit_sam3dbody(c: Checkpoint, f: _Findings) -> None:
    import warnings

    import torch
    import yaml

    from models.sam_3d_body.checkpoint import check_keys, to_port_state_dict
    from models.sam_3d_body.config import read_model_config
    from models.sam_3d_body.network import SAM3DBodyNet

    config_path = c.files["model_config.yaml"]
    try:
        model_cfg, _ = read_model_config(config_path)
    except yaml.YAMLError as exc:
        f.damaged("model_config.yaml", f"not valid YAML ({str(exc).splitlines()[0]})")
        return
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        f.unfit(f"model_config.yaml does not describe a SAM-3D-Body model ({exc})")
        return
    raw = _state(c, "model.ckpt", f)
    if raw is not None:
        sd = raw.get("state_dict", raw) if isinstance(raw, dict) else None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            f.unfit("model.ckpt holds no state dict of tensors")
        else:
            with torch.device("meta"):
                net = SAM3DBodyNet(model_cfg)
            try:
                check_keys(net, to_port_state_dict(sd, model_cfg), c.files["model.ckpt"])
            except CheckpointError as exc:
                f.unfit(str(exc))
    try:
        with warnings.catch_warnings():  # MHR ships as TorchScript; torch marks jit.load deprecated
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(c.files["assets/mhr_model.pt"]), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        f.damaged("assets/mhr_model.pt", f"torch.jit.load fails ({str(exc).strip().splitlines()[0][:200]})")


def _fit_moge(c: Checkpoint, f: _Findings) -> None:
    from moge.model.v2 import MoGeModel
    from transformers.initialization import no_init_weights

    (name,) = c.files
    ckpt = _state(c, name, f)
    if ckpt is None:
        return
    if not isinstance(ckpt, dict) or not {"model_config", "model"} <= ckpt.keys():
        f.unfit(f"{name} is not a MoGe-2 checkpoint (a dict with 'model_config' and 'model')")
        return
    try:
        # The weights are never loaded into it: skip the random initialisation (and its memory writes).
        with no_init_weights():
            model = MoGeModel(**ckpt["model_config"])
    except Exception as exc:  # any error of the model constructor means the config does not fit
        f.unfit(f"{name}: model_config does not build a MoGe-2 model ({exc})")
        return
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    _compare_keys(name, "the MoGe-2 model of its model_config", want, have, f)


def _compare_keys(
    name: str, model: str, want: dict[str, tuple[int, ...]], have: dict[str, tuple[int, ...]], f: _Findings
) -> None:
    """Record every key missing from or unexpected in ``name`` and every shape mismatch."""
    shapes = [
        f"{k} (file {have[k]}, model {want[k]})"
        for k in sorted(want.keys() & have.keys())
        if want[k] != have[k]
    ]
    problems = [
        f"{what} {format_keys(keys)}"
        for what, keys in (
            ("missing keys", want.keys() - have.keys()),
            ("unexpected keys", have.keys() - want.keys()),
            ("shape mismatches", shapes),
        )
        if keys
    ]
    if problems:
        f.unfit(f"{name} does not match {model}: {'; '.join(problems)}")


def _fit_vas(c: Checkpoint, f: _Findings) -> None:
    from models.diffusion_vas import VAS_IN_CHANNELS

    _json_files(c, f)
    index = _json(c, "model_index.json", f) if not f.problems else None
    if index is None:
        return
    absent = [part for part in VAS_COMPONENTS if part not in index]
    if absent:
        f.unfit(f"model_index.json names no {', '.join(absent)}: not a Diffusion-VAS pipeline folder")
    headers = {name: _header(c, name, f) for name in c.files if name.endswith(".safetensors")}
    unet = headers.get("unet/diffusion_pytorch_model.safetensors")
    if unet is None:
        return
    conv = unet.get("conv_in2.weight")
    if conv is None or len(conv) != 4 or conv[1] != VAS_IN_CHANNELS:
        f.unfit(
            f"unet/diffusion_pytorch_model.safetensors has no {VAS_IN_CHANNELS}-channel conv_in2 "
            f"(found {conv}): a stock Stable Video Diffusion UNet, not Diffusion-VAS"
        )


def _fit_depth(c: Checkpoint, f: _Findings) -> None:
    from models.depth import EXPECTED_ESTIMATION_TYPE, EXPECTED_MODEL_TYPE, WEIGHTS_FILE

    _json_files(c, f)
    if f.problems:
        return
    config = _auto_config(c, f)
    if config is not None:
        if config.model_type != EXPECTED_MODEL_TYPE:
            f.unfit(
                f"config.json: a {config.model_type!r} model, not Depth Anything ({EXPECTED_MODEL_TYPE!r})"
            )
        estimation = getattr(config, "depth_estimation_type", EXPECTED_ESTIMATION_TYPE)
        if estimation != EXPECTED_ESTIMATION_TYPE:
            f.unfit(
                f"config.json: a {estimation!r} depth model; Diffusion-VAS needs the {EXPECTED_ESTIMATION_TYPE!r} one"
            )
    _header(c, WEIGHTS_FILE, f)


_FIT = {
    "sam3": _fit_sam3,
    "sam-3d-body": _fit_sam3dbody,
    "moge": _fit_moge,
    "vas-amodal": _fit_vas,
    "vas-completion": _fit_vas,
    "depth": _fit_depth,
}
