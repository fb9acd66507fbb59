"""The example clips: the list in ``app.examples_list``, and which of them the gallery can show.

The list (``body4d/configs/examples.yaml`` by default) names each clip's ``file`` relative to
``app.examples_dir``, its SHA-256 and size, licence and attribution. A clip with a ``url`` is
downloaded there by ``scripts/setup.py`` (``--examples`` alone fetches only the clips); a clip
without one ships with the code. The gallery shows, in list order, every clip that is present
with its recorded size.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from body4d.config import Config
from body4d.errors import InputError
from body4d.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

# Read size when hashing a clip.
_HASH_CHUNK = 1 << 20
_REQUIRED = ("caption", "file", "sha256", "size", "description", "licence", "attribution")
_OPTIONAL = ("url",)
_HEX = frozenset("0123456789abcdef")
FETCH_COMMAND = "python scripts/setup.py --examples"


class ExamplesError(InputError):
    """The examples list cannot be read or has bad entries; the message names the file and each entry."""


@dataclass(frozen=True)
class Example:
    """One clip of the examples list.

    Attributes:
        caption: the gallery caption.
        file: the clip's path relative to ``app.examples_dir`` (POSIX, inside that folder).
        sha256: SHA-256 of the clip, 64 lowercase hex digits.
        size: size of the clip in bytes.
        description: one line on who is in it and how long it is.
        licence: SPDX identifier of the clip's licence.
        attribution: whom to credit (copyright line, source).
        url: where ``scripts/setup.py`` downloads it from; None for a clip that ships with the code.
    """

    caption: str
    file: str
    sha256: str
    size: int
    description: str
    licence: str
    attribution: str
    url: str | None = None

    def path(self, cfg: Config) -> Path:
        """Where the clip lives: ``app.examples_dir / file``."""
        return Path(cfg.app.examples_dir) / self.file

    def is_present(self, cfg: Config) -> bool:
        """The clip is on disk with its recorded size (the cheap check done at every app start)."""
        path = self.path(cfg)
        return path.is_file() and path.stat().st_size == self.size


def load_examples(path: str | Path) -> list[Example]:
    """Read and validate an examples list.

    Args:
        path: the YAML file: a mapping with one key ``examples``, a list of entries (see `Example`).

    Returns:
        The entries, in file order.

    Raises:
        ExamplesError: the file is missing or not YAML, or (all listed at once) entries with a missing,
            unknown or malformed key, or two entries with the same file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExamplesError(
            f"cannot read the examples list {path} ({exc.strerror or exc}): "
            "point app.examples_list at an existing YAML file"
        ) from exc
    except yaml.YAMLError as exc:
        raise ExamplesError(f"the examples list {path} is not valid YAML: {exc}") from exc
    entries = data.get("examples") if isinstance(data, dict) and set(data) == {"examples"} else None
    if not isinstance(entries, list):
        raise ExamplesError(f"the examples list {path} must be a mapping with one key, `examples:`, a list")
    problems: list[str] = []
    examples: list[Example] = []
    for number, entry in enumerate(entries, start=1):
        example = _example(entry, problems, f"entry {number}")
        if example is not None:
            examples.append(example)
    counts = Counter(e.file for e in examples)
    problems += [f"file {f} is listed {n} times: list each clip once" for f, n in counts.items() if n > 1]
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ExamplesError(f"{len(problems)} problem(s) in the examples list {path}:\n{lines}")
    return examples


def _example(entry: Any, problems: list[str], where: str) -> Example | None:
    """The `Example` of one list entry, or None after appending its problems to ``problems``."""
    if not isinstance(entry, dict):
        problems.append(f"{where} must be a mapping of {', '.join(_REQUIRED)} (and url)")
        return None
    if isinstance(entry.get("file"), str):
        where = f"{where} ({entry['file']})"
    found = len(problems)
    problems += [f"{where}: missing key {k}" for k in _REQUIRED if k not in entry]
    problems += [
        f"{where}: unknown key {k} (valid: {', '.join(_REQUIRED + _OPTIONAL)})"
        for k in entry
        if k not in _REQUIRED + _OPTIONAL
    ]
    for key in ("caption", "file", "description", "licence", "attribution", "url"):
        if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
            problems.append(f"{where}: {key} must be a non-empty string")
    if isinstance(entry.get("file"), str) and entry["file"].strip():
        file = PurePosixPath(entry["file"])
        if file.is_absolute() or ".." in file.parts or "\\" in entry["file"]:
            problems.append(f"{where}: file must be a relative POSIX path inside app.examples_dir")
        elif file.suffix.lower() not in VIDEO_EXTENSIONS:
            problems.append(f"{where}: file must be a video ({', '.join(VIDEO_EXTENSIONS)})")
    sha256 = entry.get("sha256")
    if "sha256" in entry and not (isinstance(sha256, str) and len(sha256) == 64 and set(sha256) <= _HEX):
        problems.append(f"{where}: sha256 must be 64 lowercase hex digits (the output of sha256sum)")
    size = entry.get("size")
    if "size" in entry and not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        problems.append(f"{where}: size must be a positive number of bytes")
    url = entry.get("url")
    if isinstance(url, str) and not url.startswith(("https://", "http://")):
        problems.append(f"{where}: url must start with https:// (or http://)")
    if len(problems) > found:
        return None
    return Example(**{k: entry[k] for k in _REQUIRED + _OPTIONAL if k in entry})


def gallery_items(cfg: Config) -> list[tuple[Path, str]]:
    """The clips of ``app.examples_list`` that are present with their recorded size, in list order.

    A shipped clip that is missing or of another size is logged (restore it with git); downloads
    still to fetch are reported by `missing_examples`.

    Args:
        cfg: the configuration (``app.examples_list``, ``app.examples_dir``).

    Returns:
        ``(clip path, caption)`` per clip.

    Raises:
        ExamplesError: as `load_examples`.
    """
    items: list[tuple[Path, str]] = []
    for example in load_examples(cfg.app.examples_list):
        if example.is_present(cfg):
            items.append((example.path(cfg), example.caption))
        elif example.url is None:
            log.warning(
                "shipped example %s is missing or not %d bytes: restore it with `git checkout -- %s`",
                example.path(cfg),
                example.size,
                example.path(cfg),
            )
    return items


def missing_examples(cfg: Config) -> list[Example]:
    """The downloadable clips of ``app.examples_list`` not present with their recorded size, in list order.

    Raises:
        ExamplesError: as `load_examples`.
    """
    return [e for e in load_examples(cfg.app.examples_list) if e.url is not None and not e.is_present(cfg)]


def fetch_hint(missing: int) -> str:
    """The sentence telling how to get ``missing`` more examples ("" when there are none)."""
    if not missing:
        return ""
    return f"run `{FETCH_COMMAND}` to fetch {missing} more example{'s' if missing > 1 else ''}"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file as 64 lowercase hex digits, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
