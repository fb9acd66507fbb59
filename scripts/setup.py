"""Download every checkpoint into a folder and point your config at it; fetch the example clips.

Usage:
    python scripts/setup.py --ckpt-root /data/checkpoints [--with-completion] [--config FILE]
                            [--no-download | --no-examples]
    python scripts/setup.py --examples [--config FILE]

Steps:
1. set ``paths.ckpt_root`` in the config the app reads: ``--config FILE``, else ``$BODY4D_CONFIG``,
   else the user config ``~/.config/body4d/body4d.yaml`` (``$XDG_CONFIG_HOME/body4d/``). The file is
   created if absent; its other keys and comments are kept. The shipped default config
   (``body4d/configs/body4d.yaml``) is never written.
2. download what is missing with ``huggingface_hub`` to where that config points, only the files the
   loaders read (``models.sam3.SNAPSHOT_FILES``, ``models.moge.CHECKPOINT_FILE``, the config's
   SAM-3D-Body paths); existing non-empty files are skipped, and a whole-repository folder counts as
   done only with its ``.complete`` marker;
3. download the example clips of ``app.examples_list`` that have a ``url`` into ``app.examples_dir``
   (``--no-examples`` skips them): each is streamed to a temporary file and kept only if its SHA-256
   is the one listed; a clip already there with that hash is skipped;
4. verify with the same check the app uses and exit 1 if anything is still missing.

``--examples`` does step 3 alone, for the config the app reads (``--config``, else as the app finds it).

SAM-3 and SAM-3D-Body are gated: accept their licences on huggingface.co and export
``HF_TOKEN`` (or ``huggingface-cli login``) first. This is the only place body4d downloads.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import re
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from body4d.checkpoints import checkpoint_report  # noqa: E402
from body4d.config import (  # noqa: E402
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    find_config,
    load_config,
    user_config,
)
from body4d.examples import Example, ExamplesError, file_sha256, load_examples  # noqa: E402
from body4d.run_dir import atomic_path, atomic_write_bytes  # noqa: E402

log = logging.getLogger("body4d.setup")
COMPLETE_MARKER = ".complete"
# Seconds an example download may wait for the server (connecting, or between two reads).
DOWNLOAD_TIMEOUT_S = 60.0
# Bytes read per chunk while streaming an example clip to disk.
DOWNLOAD_CHUNK = 1 << 20
NEW_CONFIG_HEADER = (
    "# body4d user config: every key set here overrides the shipped default (body4d/configs/body4d.yaml,\n"
    "# which documents them all). scripts/setup.py keeps paths.ckpt_root up to date; the rest is yours.\n\n"
)
# The value of ``ckpt_root:`` inside a block-style top-level ``paths:`` section.
_CKPT_ROOT_VALUE = re.compile(
    r"^paths:[^\n]*\n(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]+ckpt_root:[ \t]*([^\n]*)$", re.MULTILINE
)
_PATHS_SECTION = re.compile(r"^paths\s*:", re.MULTILINE)


@dataclass(frozen=True)
class Download:
    """One Hugging Face repository, or some of its files, placed in ``folder``.

    Attributes:
        repo_id: the Hugging Face repository.
        folder: local folder mirroring the repository's layout.
        files: the repository files to fetch (paths inside it); None = the whole repository.
    """

    repo_id: str
    folder: Path
    files: tuple[str, ...] | None = None


def downloads(cfg: Config, with_completion: bool) -> list[Download]:
    """What to fetch and where: the locations ``cfg`` points at, with the files their loaders read."""
    from models.moge import CHECKPOINT_FILE
    from models.sam3 import SNAPSHOT_FILES

    body = cfg.sam_3d_body
    body_dir = Path(body.ckpt_path).parent
    body_files = []
    for key in ("ckpt_path", "config_path", "mhr_path"):
        path = Path(getattr(body, key))
        if not path.is_relative_to(body_dir):
            raise SystemExit(
                f"sam_3d_body.{key} = {path} is outside {body_dir}, the folder of sam_3d_body.ckpt_path: "
                "keep the SAM-3D-Body files together as released, or download them by hand"
            )
        body_files.append(path.relative_to(body_dir).as_posix())
    items = [
        Download("facebook/sam3", Path(cfg.sam3.ckpt_path), tuple(SNAPSHOT_FILES)),
        Download("facebook/sam-3d-body-dinov3", body_dir, tuple(body_files)),
    ]
    if cfg.camera.ckpt_path:
        items.append(
            Download("Ruicheng/moge-2-vitl-normal", Path(cfg.camera.ckpt_path).parent, (CHECKPOINT_FILE,))
        )
    if with_completion:
        c = cfg.completion
        items += [
            Download("kaihuac/diffusion-vas-amodal-segmentation", Path(c.model_path_mask)),
            Download("kaihuac/diffusion-vas-content-completion", Path(c.model_path_rgb)),
            Download("depth-anything/Depth-Anything-V2-Large-hf", Path(c.model_path_depth)),
        ]
    return items


def write_ckpt_root(config_path: Path, ckpt_root: Path) -> None:
    """Set ``paths.ckpt_root`` in ``config_path`` (created if absent), keeping its other keys and comments.

    Raises:
        SystemExit: the file's layout hides the key (e.g. a flow-style ``paths: {...}``): the message says
            what to write by hand.
    """
    value = json.dumps(str(ckpt_root))  # a double-quoted YAML scalar: safe for any path
    text = config_path.read_text(encoding="utf-8") if config_path.is_file() else NEW_CONFIG_HEADER
    found = _CKPT_ROOT_VALUE.search(text)
    if found:
        text = f"{text[: found.start(1)]}{value}{text[found.end(1) :]}"
    elif not _PATHS_SECTION.search(text):
        text = f"{text.rstrip()}\n\npaths:\n  ckpt_root: {value}\n".lstrip()
    if _ckpt_root_of(text) != str(ckpt_root):
        raise SystemExit(
            f"cannot set paths.ckpt_root in {config_path}: write `ckpt_root: {value}` under its "
            "`paths:` section by hand and run setup again"
        )
    atomic_write_bytes(config_path, text.encode("utf-8"))


def _ckpt_root_of(text: str) -> object:
    """``paths.ckpt_root`` of a YAML text, or None when it is not valid YAML or has no such key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    paths = data.get("paths") if isinstance(data, dict) else None
    return paths.get("ckpt_root") if isinstance(paths, dict) else None


def is_done(item: Download) -> bool:
    """Every wanted file is there and non-empty (or, for a whole repository, its completion marker)."""
    if item.files is not None:
        return all((item.folder / f).is_file() and (item.folder / f).stat().st_size > 0 for f in item.files)
    return (item.folder / COMPLETE_MARKER).is_file()


def fetch(item: Download, token: str | None) -> str | None:
    """Download one repository (or its wanted files); return None on success or a one-line reason."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    if is_done(item):
        log.info("[SKIP] %s already in %s", item.repo_id, item.folder)
        return None
    log.info("[GET ] %s -> %s", item.repo_id, item.folder)
    try:
        snapshot_download(
            item.repo_id,
            local_dir=item.folder,
            allow_patterns=list(item.files) if item.files is not None else None,
            token=token,
        )
    except GatedRepoError:
        return (
            f"{item.repo_id} is gated: accept its licence at https://huggingface.co/{item.repo_id} "
            "and export HF_TOKEN with a token of that account"
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        return f"{item.repo_id} could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    if item.files is None:
        (item.folder / COMPLETE_MARKER).write_text("ok\n")
    return None


class _HashMismatch(Exception):
    """A download whose SHA-256 (the message) is not the listed one; raised to discard its file."""


def fetch_example(example: Example, target: Path) -> str | None:
    """Download one example clip to ``target``; return None on success or a one-line reason.

    Args:
        example: a list entry with a ``url``.
        target: where the clip goes; kept only when the download's SHA-256 is ``example.sha256``.

    Returns:
        None when ``target`` holds the clip (downloaded, or already there with that hash), else why not.

    Raises:
        ValueError: ``example`` has no ``url`` (it ships with the code).
    """
    if example.url is None:
        raise ValueError(f"example {example.file} ships with the code: there is nothing to download")
    if target.is_file() and file_sha256(target) == example.sha256:
        log.info("[SKIP] example %s already in %s", example.caption, target)
        return None
    log.info("[GET ] %s -> %s", example.url, target)
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            with (
                urllib.request.urlopen(example.url, timeout=DOWNLOAD_TIMEOUT_S) as response,
                tmp.open("wb") as out,
            ):
                while chunk := response.read(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != example.sha256:
                raise _HashMismatch(digest.hexdigest())
    except _HashMismatch as exc:
        return (
            f"{example.url} has sha256 {exc}, expected {example.sha256} (not kept): the file changed at "
            "its source; check it and update sha256 and size in app.examples_list"
        )
    except (OSError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors
        return f"{example.url} could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    return None


def fetch_examples(cfg: Config) -> list[str]:
    """Download the clips of ``app.examples_list`` that have a ``url`` into ``app.examples_dir``.

    Returns:
        One reason per clip that could not be fetched (empty: all there).
    """
    try:
        examples = load_examples(cfg.app.examples_list)
    except ExamplesError as exc:
        log.error("[BLOCKED] %s", exc)
        return [str(exc)]
    failures = []
    for example in examples:
        if example.url is None:
            continue
        reason = fetch_example(example, example.path(cfg))
        if reason:
            log.error("[BLOCKED] %s", reason)
            failures.append(reason)
    return failures


def target_config(explicit: Path | None) -> Path:
    """The config file setup writes: ``--config``, else ``$BODY4D_CONFIG``, else the user config.

    Raises:
        SystemExit: it is the shipped default, or there is no user config folder (no HOME).
    """
    target = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else user_config())
    if target is None:
        raise SystemExit("HOME and XDG_CONFIG_HOME are unset, so there is no user config: pass --config FILE")
    target = target.expanduser().resolve()
    if target == DEFAULT_CONFIG.resolve():
        raise SystemExit(
            f"{target} is the shipped default config, which setup never edits: omit --config "
            f"(setup then writes {user_config()}) or name a file of your own"
        )
    return target


def examples_only(config: Path | None) -> int:
    """``--examples``: fetch the example clips for the config the app reads; returns the exit code."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    failures = fetch_examples(cfg)
    if failures:
        log.error("%d example clip(s) not fetched", len(failures))
        return 1
    log.info("example clips in %s", cfg.app.examples_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt-root", type=Path, default=None, help="folder that will hold every checkpoint")
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"file to write paths.ckpt_root into (default: ${CONFIG_ENV}, else the user config)",
    )
    ap.add_argument(
        "--with-completion", action="store_true", help="also get Diffusion-VAS + Depth Anything V2"
    )
    ap.add_argument("--no-download", action="store_true", help="only write the config and verify")
    examples = ap.add_mutually_exclusive_group()
    examples.add_argument(
        "--examples", action="store_true", help="only fetch the example clips (no --ckpt-root)"
    )
    examples.add_argument("--no-examples", action="store_true", help="do not fetch the example clips")
    args = ap.parse_args(argv)
    if args.examples and (args.ckpt_root is not None or args.no_download or args.with_completion):
        ap.error(
            "--examples only fetches the example clips: drop it for the full setup (which fetches them too)"
        )
    if not args.examples and args.ckpt_root is None:
        ap.error("--ckpt-root is required (or --examples to fetch only the example clips)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.examples:
        return examples_only(args.config)

    ckpt_root = args.ckpt_root.expanduser().resolve()
    ckpt_root.mkdir(parents=True, exist_ok=True)
    config_path = target_config(args.config)
    write_ckpt_root(config_path, ckpt_root)
    log.info("config %s: paths.ckpt_root = %s", config_path, ckpt_root)
    read = find_config().expanduser().resolve()
    if read != config_path:
        log.warning(
            "the app reads %s by default: start it with --config %s or export %s=%s",
            read,
            config_path,
            CONFIG_ENV,
            config_path,
        )

    overrides = ["completion.enable=true"] if args.with_completion else None
    try:
        cfg = load_config(config_path, overrides=overrides, env={})
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    token = os.environ.get("HF_TOKEN") or None
    failures = []
    if not args.no_download:
        for item in downloads(cfg, args.with_completion):
            reason = fetch(item, token)
            if reason:
                log.error("[BLOCKED] %s", reason)
                failures.append(reason)
        if not args.no_examples:
            failures += fetch_examples(cfg)

    report = checkpoint_report(cfg)
    log.info("%s", report.text())
    if failures or not report.ok:
        log.error(
            "setup incomplete: %d download(s) blocked, %d checkpoint(s) missing",
            len(failures),
            len(report.missing),
        )
        return 1
    log.info("setup complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
