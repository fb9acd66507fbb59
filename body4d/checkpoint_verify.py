"""Deep verification of the checkpoint files: what `scripts/setup.py` checks after every download.

`body4d.checkpoints.checkpoint_report` only looks for the files (cheap enough for the app's status
panel). Here every file a loader reads is opened the way that loader opens it, without building a
network:

* present and not empty;
* the size and SHA-256 published for the released file (`PUBLISHED`, from the public inventories of
  the real files), unless the folder holds a tiny test checkpoint (`models.errors.TINY_MARKER`),
  which the published figures cannot describe: that is said, never passed over silently;
* the SHA-256 the Hub reported when huggingface_hub downloaded the file (the ETag of an LFS file,
  recorded in ``<folder>/.cache/huggingface/download/<file>.metadata``): catches a file damaged
  after or during its download;
* ``.json``: parses; ``.safetensors``: its header opens and lists tensors; ``.pt``/``.ckpt``/``.pth``/
  ``.bin``: a TorchScript archive loads with ``torch.jit.load``, anything else with
  ``torch.load(weights_only=True)`` (memory-mapped) and must hold tensors.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from body4d.examples import file_sha256
from models.errors import TINY_MARKER

# Where huggingface_hub's local-dir downloads record the commit and ETag of each file.
HUB_METADATA_DIR = Path(".cache") / "huggingface" / "download"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TORCH_SUFFIXES = (".pt", ".ckpt", ".pth", ".bin")
# Folders of a downloaded repository that hold no model file.
_DEBRIS = (".cache", ".git")


@dataclass(frozen=True)
class Published:
    """Size and SHA-256 of a released file, as its public inventories give them."""

    size: int
    sha256: str


# (Hugging Face repository, file inside it) -> published figures (../research/real-checkpoints.md).
PUBLISHED: dict[tuple[str, str], Published] = {
    ("facebook/sam-3d-body-dinov3", "model.ckpt"): Published(
        2_109_129_346, "b5a2f9d305dd02626b967aa2e86021fba07065df66ce7a7e00ffb9664f150abf"
    ),
    ("facebook/sam-3d-body-dinov3", "assets/mhr_model.pt"): Published(
        696_110_248, "352e271a6c42729c68554ceaea0c955e866970160c31e35506d782dc0f7377bc"
    ),
}


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict.

    Attributes:
        name: the file, relative to its checkpoint folder.
        problem: why it is unusable, or "" when it passed every check.
        notes: what was checked, or what could not be (e.g. a tiny checkpoint's published hash).
    """

    name: str
    problem: str = ""
    notes: tuple[str, ...] = ()


def hub_sha256(folder: Path, name: str) -> str | None:
    """The SHA-256 the Hub gave for ``name`` when it was downloaded into ``folder``, if it recorded one.

    huggingface_hub writes ``commit``, ``etag`` and a timestamp, one per line; the ETag of a file kept
    in LFS (every weight file) is its SHA-256. A small git file's ETag is a git hash: None then.
    """
    meta = folder / HUB_METADATA_DIR / f"{name}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    etag = lines[1].strip().strip('"') if len(lines) > 1 else ""
    return etag if _SHA256.match(etag) else None


def is_tiny(folder: Path) -> bool:
    """``folder`` (or one of its two parents) is marked as a tiny random test checkpoint."""
    return any((p / TINY_MARKER).exists() for p in (folder, *folder.parents[:2]))


def _content_problem(path: Path) -> str | None:
    """Why the file cannot be opened as its loader opens it, or None."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"not valid JSON ({exc})"
        return None
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if not list(f.keys()):
                    return "a safetensors file without tensors"
        except Exception as exc:  # safetensors raises its own SafetensorError for a bad header
            return f"unreadable safetensors header ({_first_line(exc)})"
        return None
    if suffix not in _TORCH_SUFFIXES:
        return None
    if zipfile.is_zipfile(path) and any(
        n.endswith("/constants.pkl") for n in zipfile.ZipFile(path).namelist()
    ):
        try:
            torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a damaged archive can fail in any way; none of it may pass
            return f"not a loadable TorchScript module ({_first_line(exc)})"
        return None
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged pickle can fail in any way; none of it may pass
        return f"not a readable PyTorch file of tensors ({_first_line(exc)})"
    if not _holds_tensors(obj):
        return "a PyTorch file without tensors"
    return None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 160 characters."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def _holds_tensors(obj: object) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_holds_tensors(v) for v in obj.values())
    return False


def check_file(
    folder: Path,
    name: str,
    published: Published | None = None,
    tiny: bool = False,
) -> FileCheck:
    """Every check that applies to ``folder/name`` (see the module docstring).

    Args:
        folder: the checkpoint folder (a local copy of a Hub repository, or part of it).
        name: the file inside it.
        published: its published size and SHA-256, if any.
        tiny: the folder is a tiny test checkpoint (published figures do not apply).
    """
    path = folder / name
    if not path.is_file():
        return FileCheck(name, "missing")
    size = path.stat().st_size
    if size == 0:
        return FileCheck(name, "empty file (an interrupted download?)")
    notes = []
    digest = None
    if published is not None:
        if tiny:
            notes.append("tiny test checkpoint: its published size and SHA-256 do not apply")
        elif size != published.size:
            return FileCheck(name, f"{size:,} bytes, the released file has {published.size:,} (truncated?)")
        else:
            digest = file_sha256(path)
            if digest != published.sha256:
                return FileCheck(
                    name, f"SHA-256 {digest[:12]}… is not the released file's {published.sha256[:12]}…"
                )
            notes.append("size and SHA-256 of the release")
    expected = hub_sha256(folder, name)
    if expected is not None:
        digest = digest or file_sha256(path)
        if digest != expected:
            return FileCheck(
                name,
                f"SHA-256 {digest[:12]}… differs from the {expected[:12]}… the Hub gave (corrupt download)",
            )
        notes.append("SHA-256 the Hub gave")
    problem = _content_problem(path)
    return FileCheck(name, problem or "", tuple(notes))


def repository_files(folder: Path) -> list[str]:
    """Every file of a downloaded repository folder, outside download debris and the markers of setup
    (dot files) and of the tiny test checkpoints."""
    if not folder.is_dir():
        return []
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and not set(p.relative_to(folder).parts) & set(_DEBRIS)
        and not p.name.startswith(".")
        and p.name != TINY_MARKER
    )


def check_files(repo_id: str, folder: Path, names: Iterable[str]) -> list[FileCheck]:
    """`check_file` for each of ``names`` in ``folder``, with the published figures of ``repo_id``."""
    tiny = is_tiny(folder)
    return [check_file(folder, n, PUBLISHED.get((repo_id, n)), tiny) for n in names]
