"""Download every checkpoint into a folder, verify it, and point your config at it; fetch the example clips.

Usage:
    python scripts/setup.py --ckpt-root /data/checkpoints [--with-completion] [--only NAME ...]
                            [--from SOURCE] [--config FILE] [--no-download | --no-examples]
    python scripts/setup.py --check [--ckpt-root DIR] [--with-completion] [--only NAME ...] [--config FILE]
    python scripts/setup.py --examples [--config FILE]

NAMEs (``--only``): sam3, sam-3d-body, moge, vas-amodal, vas-completion, depth (the last three are
the occlusion-completion models; naming one implies ``--with-completion``).

Steps:
1. set ``paths.ckpt_root`` in the config the app reads: ``--config FILE``, else ``$BODY4D_CONFIG``,
   else the user config ``~/.config/body4d/body4d.yaml`` (``$XDG_CONFIG_HOME/body4d/``). The file is
   created if absent; its other keys and comments are kept. The shipped default config
   (``body4d/configs/body4d.yaml``) is never written.
2. verify each checkpoint (`body4d.checkpoint_verify`: files present, published sizes and SHA-256,
   the SHA-256 the Hub gave at download, JSON / safetensors headers / ``torch.load(weights_only)`` /
   TorchScript readable); a verified one is skipped, any other is fetched: with ``huggingface_hub``
   (only the files the loaders read: ``models.sam3.SNAPSHOT_FILES``, ``models.moge.CHECKPOINT_FILE``,
   the config's SAM-3D-Body paths; whole repositories for Diffusion-VAS and Depth Anything;
   interrupted downloads resume), or with ``--from SOURCE`` copied from a mirror laid out like the
   checkpoint root: a local or mounted folder, or an fsspec URL such as ``gs://bucket/prefix``
   (``pip install -e '.[gcs]'``);
3. download the example clips of ``app.examples_list`` that have a ``url`` into ``app.examples_dir``
   (``--no-examples`` skips them): each is streamed to a temporary file and kept only if its SHA-256
   is the one listed; a clip already there with that hash is skipped;
4. verify again, print a table of every checkpoint (ok, MISSING or BROKEN, and why) and the app's own
   presence check, and exit 1 if anything is missing or broken.

``--check`` does the verification and the table alone (downloads nothing, writes nothing), for
``--ckpt-root`` if given, else for the config the app reads. ``--examples`` does step 3 alone.

SAM-3 and SAM-3D-Body are gated: accept their licences on huggingface.co and export
``HF_TOKEN`` (or ``hf auth login``) first. This is the only place body4d downloads.
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

from body4d.checkpoint_verify import FileCheck, check_files, repository_files  # noqa: E402
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
from models.errors import TINY_MARKER  # noqa: E402

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


# ``--only`` names, in the order of `downloads`; the last three are the occlusion-completion models.
NAMES = ("sam3", "sam-3d-body", "moge", "vas-amodal", "vas-completion", "depth")
COMPLETION_NAMES = NAMES[3:]


@dataclass(frozen=True)
class Download:
    """One Hugging Face repository, or some of its files, placed in ``folder``.

    Attributes:
        name: its ``--only`` name.
        repo_id: the Hugging Face repository.
        folder: local folder mirroring the repository's layout.
        files: the repository files to fetch (paths inside it); None = the whole repository.
    """

    name: str
    repo_id: str
    folder: Path
    files: tuple[str, ...] | None = None

    def wanted(self) -> list[str]:
        """The files to verify: the listed ones, or every file of the downloaded repository."""
        return list(self.files) if self.files is not None else repository_files(self.folder)


@dataclass(frozen=True)
class Verdict:
    """One checkpoint's verification: ok when every wanted file passed (see `verify`)."""

    item: Download
    files: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return bool(self.files) and not any(f.problem for f in self.files)

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "MISSING" if all(f.problem in ("missing", "") for f in self.files) else "BROKEN"

    def why(self) -> str:
        bad = [f"{f.name}: {f.problem}" for f in self.files if f.problem]
        if bad:
            return "; ".join(bad)
        notes = sorted({n for f in self.files for n in f.notes})
        return ", ".join(notes) if notes else "files present and readable"


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
        Download("sam3", "facebook/sam3", Path(cfg.sam3.ckpt_path), tuple(SNAPSHOT_FILES)),
        Download("sam-3d-body", "facebook/sam-3d-body-dinov3", body_dir, tuple(body_files)),
    ]
    if cfg.camera.ckpt_path:
        items.append(
            Download(
                "moge", "Ruicheng/moge-2-vitl-normal", Path(cfg.camera.ckpt_path).parent, (CHECKPOINT_FILE,)
            )
        )
    if with_completion:
        c = cfg.completion
        items += [
            Download("vas-amodal", "kaihuac/diffusion-vas-amodal-segmentation", Path(c.model_path_mask)),
            Download("vas-completion", "kaihuac/diffusion-vas-content-completion", Path(c.model_path_rgb)),
            Download("depth", "depth-anything/Depth-Anything-V2-Large-hf", Path(c.model_path_depth)),
        ]
    return items


def verify(item: Download) -> Verdict:
    """Every wanted file of ``item`` checked (`body4d.checkpoint_verify.check_files`)."""
    names = item.wanted()
    if not names:
        return Verdict(item, (FileCheck(".", "missing"),))
    return Verdict(item, tuple(check_files(item.repo_id, item.folder, names)))


def verdict_table(verdicts: list[Verdict]) -> str:
    """A fixed-width table: name, status, folder, and why (or what was verified)."""
    rows = [("checkpoint", "status", "folder", "why / verified")]
    rows += [(v.item.name, v.status, str(v.item.folder), v.why()) for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows
    )


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
    """Verified (`verify`), and for a whole repository also completely downloaded (its marker)."""
    if item.files is None and not (item.folder / COMPLETE_MARKER).is_file():
        return False
    return verify(item).ok


def fetch(item: Download, token: str | None) -> str | None:
    """Download one repository (or its wanted files); return None on success or a one-line reason.

    Files that are there but fail verification are downloaded again (``force_download``); an
    interrupted download resumes from its partial file.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if is_done(item):
        log.info("[SKIP] %s verified in %s", item.repo_id, item.folder)
        return None
    broken = any(f.problem and f.problem != "missing" for f in verify(item).files)
    log.info("[GET ] %s -> %s%s", item.repo_id, item.folder, " (again: a file failed verification)" * broken)
    licence = (
        f"accept its licence at https://huggingface.co/{item.repo_id} and export HF_TOKEN with a "
        "token of that account"
    )
    try:
        snapshot_download(
            item.repo_id,
            local_dir=item.folder,
            # A tiny test checkpoint's marker comes along, so that the copy is known as tiny too.
            allow_patterns=[*item.files, TINY_MARKER] if item.files is not None else None,
            token=token,
            force_download=broken,
        )
    except GatedRepoError:
        return f"{item.repo_id} is gated: {licence}"
    except RepositoryNotFoundError:  # the Hub also answers 401 to an anonymous request for a gated repo
        return f"{item.repo_id} is not accessible{'' if token else ' without a token'}: if it is gated, {licence}"
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        return f"{item.repo_id} could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    if item.files is None:
        (item.folder / COMPLETE_MARKER).write_text("ok\n")
    return None


def install_from(item: Download, source: str, ckpt_root: Path) -> str | None:
    """Copy ``item``'s files from a mirror of the checkpoint root; None on success, else a one-line reason.

    Args:
        item: what to install; its folder must lie under ``ckpt_root`` (the mirror has the same layout).
        source: a folder, or an fsspec URL (``gs://bucket/prefix`` needs the ``gcs`` extra).
        ckpt_root: the checkpoint root the mirror mirrors.
    """
    import fsspec

    if not item.folder.is_relative_to(ckpt_root):
        return f"{item.folder} is outside --ckpt-root {ckpt_root}, so the mirror has no place for it"
    if verify(item).ok:
        log.info("[SKIP] %s verified in %s", item.name, item.folder)
        return None
    rel = item.folder.relative_to(ckpt_root).as_posix()
    try:
        fs, base = fsspec.core.url_to_fs(source)
    except ImportError as exc:
        return f"{source} needs a filesystem client that is not installed ({exc}): pip install -e '.[gcs]'"
    src = f"{base.rstrip('/')}/{rel}"
    try:
        if item.files is not None:
            names = list(item.files) + [TINY_MARKER] * fs.exists(f"{src}/{TINY_MARKER}")
        else:
            names = sorted(p[len(src) + 1 :] for p in fs.find(src) if not Path(p).name.startswith("."))
        if not names:
            return f"{src} holds no files of {item.name}"
        log.info("[COPY] %s -> %s (%d file(s))", src, item.folder, len(names))
        for name in names:
            target = item.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                fs.get_file(f"{src}/{name}", str(tmp))
    except (OSError, ValueError) as exc:  # FileNotFoundError for a missing mirror file
        return f"{item.name} could not be copied from {src} ({type(exc).__name__}: {exc})"
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
    ap.add_argument(
        "--only", nargs="+", choices=NAMES, metavar="NAME", help=f"only these checkpoints: {', '.join(NAMES)}"
    )
    ap.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="SOURCE",
        help="copy from a mirror of the checkpoint root (a folder, or gs://bucket/prefix) instead of the Hub",
    )
    ap.add_argument("--no-download", action="store_true", help="only write the config and verify")
    ap.add_argument("--check", action="store_true", help="only verify: download nothing, write nothing")
    examples = ap.add_mutually_exclusive_group()
    examples.add_argument(
        "--examples", action="store_true", help="only fetch the example clips (no --ckpt-root)"
    )
    examples.add_argument("--no-examples", action="store_true", help="do not fetch the example clips")
    args = ap.parse_args(argv)
    if args.examples and (
        args.ckpt_root is not None
        or args.no_download
        or args.with_completion
        or args.only
        or args.source
        or args.check
    ):
        ap.error(
            "--examples only fetches the example clips: drop it for the full setup (which fetches them too)"
        )
    if args.check and (args.source or args.no_download):
        ap.error("--check only verifies: drop --from / --no-download")
    if not (args.examples or args.check) and args.ckpt_root is None:
        ap.error("--ckpt-root is required (or --check to verify, --examples to fetch only the example clips)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.examples:
        return examples_only(args.config)
    with_completion = args.with_completion or bool(set(args.only or ()) & set(COMPLETION_NAMES))
    overrides = ["completion.enable=true"] if with_completion else []
    if args.check:
        if args.ckpt_root is not None:
            overrides.append(f"paths.ckpt_root={args.ckpt_root.expanduser().resolve()}")
        try:
            cfg = load_config(args.config, overrides=overrides)
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
        return verify_all(cfg, with_completion, args.only, failures=[])

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
    try:
        cfg = load_config(config_path, overrides=overrides, env={})
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    token = os.environ.get("HF_TOKEN") or None
    failures = []
    if not args.no_download:
        for item in selected(cfg, with_completion, args.only):
            reason = install_from(item, args.source, ckpt_root) if args.source else fetch(item, token)
            if reason:
                log.error("[BLOCKED] %s", reason)
                failures.append(reason)
        if not args.no_examples and not args.only:
            failures += fetch_examples(cfg)
    return verify_all(cfg, with_completion, args.only, failures)


def selected(cfg: Config, with_completion: bool, only: list[str] | None) -> list[Download]:
    """The checkpoints of `downloads`, limited to the ``--only`` names when given."""
    return [i for i in downloads(cfg, with_completion) if not only or i.name in only]


def verify_all(cfg: Config, with_completion: bool, only: list[str] | None, failures: list[str]) -> int:
    """Verify, print the table and the app's presence check; the exit code (1 if anything is wrong)."""
    verdicts = [verify(i) for i in selected(cfg, with_completion, only)]
    log.info("%s", verdict_table(verdicts))
    report = checkpoint_report(cfg)
    if not only:
        log.info("%s", report.text())
    bad = [v for v in verdicts if not v.ok]
    if failures or bad or (not only and not report.ok):
        log.error(
            "setup incomplete: %d download(s) blocked, %d checkpoint(s) missing or broken",
            len(failures),
            len(bad) if only else max(len(bad), len(report.missing)),
        )
        return 1
    log.info("setup complete: every checkpoint verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
