"""Install every checkpoint into a folder, verify it, and point your config at it; fetch the example clips.

Usage:
    python scripts/setup.py --ckpt-root DIR [--with-completion] [--only NAME ...] [--from SOURCE]
                            [--config FILE] [--no-download | --no-examples]
    python scripts/setup.py --check [--ckpt-root DIR] [--with-completion] [--only NAME ...] [--config FILE]
    python scripts/setup.py --examples [--config FILE]

NAMEs (``--only``, `body4d.checkpoint_verify.NAMES`): sam3, sam-3d-body, moge, vas-amodal,
vas-completion, depth. Without ``--only``: SAM-3, SAM-3D-Body, MoGe-2 (unless ``camera.ckpt_path`` is
empty), and the occlusion-completion models (the last three) with ``--with-completion`` or
``completion.enable``; naming one of them in ``--only`` is enough to get it.

Steps:
1. set ``paths.ckpt_root`` in the config the app reads: ``--config FILE``, else ``$BODY4D_CONFIG``,
   else the user config ``~/.config/body4d/body4d.yaml`` (``$XDG_CONFIG_HOME/body4d/``). The file is
   created if absent; its other keys and comments are kept. The shipped default config
   (``body4d/configs/body4d.yaml``) is never written.
2. verify each checkpoint where that config points (`body4d.checkpoint_verify.verify`: files present,
   published sizes and sha256, the sha256 of the download record, formats, the loaders' key checks;
   hashing makes this take minutes on the real files). A verified checkpoint is skipped; of any other,
   the files that are missing or damaged are fetched:

   * from the Hugging Face Hub (``HF_ENDPOINT``), only the files the loaders read, all at the commit
     ``main`` points to. Each streams into ``<folder>/.cache/body4d/partial/``; a download cut off
     stays there and the next run resumes it with an HTTP Range request (huggingface_hub's own
     downloads discard a partial file when they fail). A file is moved into place only when its size
     and, for an LFS file, its sha256 are the ones the Hub lists; then its download record is written
     the way huggingface_hub's ``local_dir`` downloads write it (``.cache/huggingface/download/``);
   * or, with ``--from SOURCE``, from a mirror laid out like the checkpoint root
     (``SOURCE/sam3/``, ``SOURCE/sam-3d-body-dinov3/``, ...; a backup of one): a local or mounted folder,
     or an fsspec URL such as ``gs://bucket/prefix`` (needs ``pip install -e '.[gcs]'``). Each file is
     copied through a temporary file; the mirror's download records come along, and a file whose
     sha256 is not its record's is not installed.

   A tiny test checkpoint's marker file comes along too, so that a copy of one is flagged as tiny.
3. download the example clips of ``app.examples_list`` that have a ``url`` into ``app.examples_dir``
   (skipped with ``--no-examples`` or ``--only``): each is streamed to a temporary file and kept only if
   its sha256 is the one listed; a clip already there with that hash is skipped;
4. verify again and print a table on stdout: each checkpoint, its status (ok, tiny = a verified tiny
   random test checkpoint, MISSING, BROKEN), its folder, and why and the fix.

``--check`` is step 2's verification and the table alone: it downloads and writes nothing, for
``--ckpt-root`` if given, else for the config the app reads. ``--no-download`` does steps 1 and 4.
``--examples`` does step 3 alone, for the config the app reads.

Exit code: 0 when every checkpoint is verified (and every clip fetched), 1 otherwise, 2 on a usage error.

SAM-3 and SAM-3D-Body are gated: accept their licences on huggingface.co and export ``HF_TOKEN`` (or
``hf auth login``) first; a refused download says so. This is the only place body4d downloads.
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
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from body4d.checkpoint_verify import (  # noqa: E402
    BROKEN,
    MISSING,
    NAMES,
    TINY,
    Checkpoint,
    DownloadRecord,
    Verification,
    checkpoints,
    verify,
)
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
# Seconds a download may wait for the server (connecting, or between two reads).
DOWNLOAD_TIMEOUT_S = 60.0
# Bytes read per chunk while streaming a download to disk.
DOWNLOAD_CHUNK = 1 << 20
# Where a checkpoint file being received waits, inside its checkpoint folder (same file system).
PARTIAL_DIR = Path(".cache") / "body4d" / "partial"
NEW_CONFIG_HEADER = (
    "# body4d user config: every key set here overrides the shipped default (body4d/configs/body4d.yaml,\n"
    "# which documents them all). scripts/setup.py keeps paths.ckpt_root up to date; the rest is yours.\n\n"
)
# The value of ``ckpt_root:`` inside a block-style top-level ``paths:`` section.
_CKPT_ROOT_VALUE = re.compile(
    r"^paths:[^\n]*\n(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]+ckpt_root:[ \t]*([^\n]*)$", re.MULTILINE
)
_PATHS_SECTION = re.compile(r"^paths\s*:", re.MULTILINE)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_START = re.compile(r"bytes (\d+)-")
_STATUS = {MISSING: "MISSING", BROKEN: "BROKEN"}


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


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _partial(folder: Path, name: str, tag: str) -> Path:
    """Where ``folder/name`` is received before it is moved into place (``tag`` tells versions apart)."""
    return folder / PARTIAL_DIR / f"{name}.{tag}.part"


def _place(part: Path, target: Path, size: int | None, sha256: str | None, origin: str) -> str | None:
    """Move the received ``part`` to ``target`` if it has the ``size`` and ``sha256`` its source lists.

    Returns:
        None when ``target`` is in place, else why not (``part`` is then deleted).
    """
    got = part.stat().st_size
    problem = None
    if size is not None and got != size:
        problem = f"{origin}: received {got:,} bytes, the source lists {size:,}"
    elif sha256 is not None and (actual := file_sha256(part)) != sha256:
        problem = f"{origin}: sha256 {actual} is not the {sha256} the source lists (damaged in transit)"
    if problem:
        part.unlink()
        return f"{problem}: not installed; run setup again"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return None


class HubSource:
    """The Hugging Face Hub as a source of checkpoint files, with resumable downloads.

    Args:
        endpoint: the Hub's URL; None = ``HF_ENDPOINT`` (huggingface_hub's default endpoint).
        token: None = ``HF_TOKEN``, else the token of ``hf auth login``; False = none; or the token.
    """

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None) -> None:
        from huggingface_hub import constants

        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token = token
        self.label = self.endpoint

    def fetch(self, ckpt: Checkpoint, names: list[str]) -> str | None:
        """Download ``names`` (repository files of ``ckpt``) into its folder; None, or why not."""
        import httpx2
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self.endpoint, token=self.token).model_info(ckpt.repo_id, revision="main")
            listed = {s.rfilename for s in info.siblings or ()}
            absent = [n for n in names if n not in listed]
            if absent:
                return (
                    f"{ckpt.repo_id} at commit {info.sha} has no {', '.join(absent)}: the repository "
                    "changed its layout; place the files by hand (MODELS.md) and report it"
                )
            if TINY_MARKER in listed and not (ckpt.folder / TINY_MARKER).exists():
                names = [TINY_MARKER, *names]
            for name in names:
                problem = self._fetch_file(ckpt, str(info.sha), name)
                if problem:
                    return problem
        except (OSError, httpx2.HTTPError) as exc:  # HfHubHTTPError is both
            return self._refusal(ckpt.repo_id, exc)
        return None

    def _fetch_file(self, ckpt: Checkpoint, commit: str, name: str) -> str | None:
        """Download one file, resuming its partial download; None, or why it is not in place."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        local = ckpt.files.get(name, ckpt.folder / name)
        rel = local.relative_to(ckpt.folder).as_posix()
        origin = f"{ckpt.repo_id}/{name}"
        url = hf_hub_url(ckpt.repo_id, name, revision=commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, token=self.token)
        if not meta.etag:
            return f"{origin}: the Hub sent no ETag, so the download could not be checked"
        part = _partial(ckpt.folder, rel, hashlib.sha256(meta.etag.encode()).hexdigest()[:16])
        have = part.stat().st_size if part.is_file() else 0
        if meta.size is None or have > meta.size:
            have = 0  # nothing to resume: a length that is unknown, or a partial file longer than the file
        if meta.size is None or have < meta.size or not part.is_file():
            log.info("       %s%s", origin, f" (resuming at {have:,} bytes)" if have else "")
            try:
                self._receive(meta.location, part, have)
            except _Stopped as exc:
                size = f" of {meta.size:,}" if meta.size is not None else ""
                return (
                    f"{origin}: the download stopped after {exc.received:,}{size} bytes ({exc.reason}): "
                    "run setup again to resume it"
                )
        sha256 = meta.etag if _SHA256.fullmatch(meta.etag) else None
        problem = _place(part, local, meta.size, sha256, origin)
        if problem is None:
            DownloadRecord(meta.commit_hash or commit, meta.etag).write(ckpt.folder, rel)
        return problem

    def _receive(self, url: str, part: Path, have: int) -> None:
        """Append the bytes of ``url`` after the first ``have`` to ``part`` (all of them, from the start,
        when the server does not answer with that range).

        Raises:
            _Stopped: the transfer broke off (what arrived stays in ``part``).
            HfHubHTTPError: the server refused the request.
        """
        import httpx2
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        headers = build_hf_headers(token=self.token)
        if urlsplit(url)[:2] != urlsplit(self.endpoint)[:2]:
            headers.pop("authorization", None)  # the token never leaves the Hub (LFS files are on a CDN)
        headers["Accept-Encoding"] = "identity"  # the byte offsets are those of the file itself
        if have:
            headers["Range"] = f"bytes={have}-"
        part.parent.mkdir(parents=True, exist_ok=True)
        try:
            with get_session().stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S
            ) as response:
                if response.status_code >= 400:
                    response.read()  # the error message is in the body
                hf_raise_for_status(response)
                start = _CONTENT_RANGE_START.match(response.headers.get("Content-Range", ""))
                if response.status_code != 206 or start is None or int(start.group(1)) != have:
                    have = 0  # not the range asked for: write from the start (the size check refuses a part)
                with part.open("ab" if have else "wb") as out:
                    for chunk in response.iter_bytes():  # as received: a cut-off loses nothing
                        out.write(chunk)
                        have += len(chunk)
        except httpx2.TransportError as exc:
            raise _Stopped(have, _first_line(exc)) from exc

    def _refusal(self, repo_id: str, exc: BaseException) -> str:
        """Why the Hub did not deliver ``repo_id``, and the fix."""
        from huggingface_hub import get_token
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        response = exc.response if isinstance(exc, HfHubHTTPError) else None
        status = response.status_code if response is not None else None
        if isinstance(exc, GatedRepoError) or status in (401, 403):
            token = self.token if self.token is not None else get_token()
            access = (
                "the token sent (HF_TOKEN, else hf auth login) has no access"
                if token
                else "no token was sent"
            )
            return (
                f"{repo_id} is gated and {access}: accept its licence at https://huggingface.co/{repo_id} "
                "and export HF_TOKEN with a token of that account (https://huggingface.co/settings/tokens)"
            )
        if isinstance(exc, RepositoryNotFoundError):
            return f"{repo_id} is not on {self.endpoint} (HF_ENDPOINT): check the endpoint"
        return f"{repo_id} could not be downloaded from {self.endpoint} ({_first_line(exc)})"


class _Stopped(Exception):
    """A transfer that broke off after ``received`` bytes of the file."""

    def __init__(self, received: int, reason: str) -> None:
        super().__init__(reason)
        self.received = received
        self.reason = reason


class MirrorSource:
    """A mirror of the checkpoint root: a folder, or any fsspec URL (``gs://bucket/prefix``).

    Raises:
        SystemExit: the URL's file system client is not installed, or the mirror is not there.
    """

    def __init__(self, source: str) -> None:
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(source)
        except ImportError as exc:
            raise SystemExit(
                f"--from {source} needs a file system client: pip install -e '.[gcs]' ({exc})"
            ) from exc
        except ValueError as exc:  # an unknown protocol
            raise SystemExit(f"--from {source}: {exc}") from exc
        self.root = root.rstrip("/")
        self.label = source.rstrip("/")
        if not self.fs.isdir(self.root):
            raise SystemExit(
                f"--from {source}: no such folder (a mirror holds sam3/, sam-3d-body-dinov3/, ...)"
            )

    def fetch(self, ckpt: Checkpoint, names: list[str]) -> str | None:
        """Copy ``names`` (repository files of ``ckpt``) from ``<mirror>/<ckpt.subdir>``; None, or why not."""
        base = f"{self.root}/{ckpt.subdir}"
        try:
            if self.fs.isfile(f"{base}/{TINY_MARKER}") and not (ckpt.folder / TINY_MARKER).exists():
                names = [TINY_MARKER, *names]
            for name in names:
                problem = self._copy(ckpt, base, name)
                if problem:
                    return problem
        except Exception as exc:  # fsspec back ends raise their own types (e.g. gcsfs HttpError)
            return f"{self.label}/{ckpt.subdir} could not be read ({_first_line(exc)})"
        return None

    def _copy(self, ckpt: Checkpoint, base: str, name: str) -> str | None:
        """Copy one file (and its download record); None, or why it is not in place."""
        local = ckpt.files.get(name, ckpt.folder / name)
        rel = local.relative_to(ckpt.folder).as_posix()
        origin = f"{self.label}/{ckpt.subdir}/{name}"
        src = f"{base}/{name}"
        if not self.fs.isfile(src):
            return f"{origin} is not in the mirror"
        meta = f"{base}/{DownloadRecord.path(Path(), name).as_posix()}"
        record = (
            DownloadRecord.parse(self.fs.cat_file(meta).decode("utf-8")) if self.fs.isfile(meta) else None
        )
        log.info("[COPY] %s", origin)
        part = _partial(ckpt.folder, rel, "mirror")
        part.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open(src, "rb") as source, part.open("wb") as out:
            while chunk := source.read(DOWNLOAD_CHUNK):
                out.write(chunk)
        problem = _place(part, local, self.fs.size(src), record.sha256 if record else None, origin)
        if problem is None and record is not None:
            record.write(ckpt.folder, rel)
        return problem


def install(ckpt: Checkpoint, source: HubSource | MirrorSource) -> tuple[Verification, str | None]:
    """Verify ``ckpt``; unless it passes, fetch its missing and damaged files from ``source`` and verify again.

    Returns:
        The final verification, and why fetching failed (None when it did not fail or was not needed).
    """
    before = verify(ckpt)
    if before.ok:
        log.info("[SKIP] %s (%s) verified in %s", ckpt.name, ckpt.repo_id, ckpt.folder)
        return before, None
    names = [*before.missing, *before.refetch]
    if not names:  # the files are intact but do not fit: another copy of them would not either
        return before, None
    log.info(
        "[GET ] %s (%s): %s from %s -> %s",
        ckpt.name,
        ckpt.repo_id,
        ", ".join(names),
        source.label,
        ckpt.folder,
    )
    failure = source.fetch(ckpt, names)
    if failure:
        log.error("[BLOCKED] %s", failure)
    return verify(ckpt), failure


def table(results: list[tuple[Verification, str | None]], ckpt_root: Path) -> str:
    """A fixed-width table: checkpoint, status, folder, then why and the fix (several lines if need be)."""
    rows = [("checkpoint", "status", "folder", ["why / fix"])]
    for v, failure in results:
        c = v.checkpoint
        why = [failure] if failure else []
        why += list(v.problems)
        if v.status == TINY:
            why += ["TINY TEST CHECKPOINT: random weights, results are meaningless", *v.notes]
        if not v.ok:
            why.append(f"fix: python scripts/setup.py --ckpt-root {ckpt_root} --only {c.name}")
        rows.append((c.name, _STATUS.get(v.status, v.status), str(c.folder), why or [""]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    indent = " " * (sum(widths) + 2 * len(widths))
    lines = []
    for *cells, why in rows:
        head = "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True))
        lines.append(f"{head}  {why[0]}".rstrip())
        lines += [f"{indent}{more}" for more in why[1:]]
    return "\n".join(lines)


def finish(results: list[tuple[Verification, str | None]], cfg: Config, example_failures: list[str]) -> int:
    """Print the table; log the verdict; the exit code (1 when anything is not verified or fetched)."""
    print(table(results, Path(cfg.paths.ckpt_root)), flush=True)
    bad = [v.checkpoint.name for v, _ in results if not v.ok]
    if bad or example_failures:
        log.error(
            "setup incomplete: %s%s",
            f"not verified: {', '.join(bad)}" if bad else "every checkpoint verified",
            f"; {len(example_failures)} example clip(s) not fetched" if example_failures else "",
        )
        return 1
    log.info("setup complete: every checkpoint verified")
    return 0


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
        help=f"the config setup writes paths.ckpt_root into and --check reads (default: ${CONFIG_ENV}, "
        "else the user config; --check: the one the app reads)",
    )
    ap.add_argument(
        "--with-completion", action="store_true", help="also get Diffusion-VAS + Depth Anything V2"
    )
    ap.add_argument(
        "--only",
        nargs="+",
        choices=NAMES,
        metavar="NAME",
        help=f"only these checkpoints (no example clips): {', '.join(NAMES)}",
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
    full_setup = (args.ckpt_root, args.no_download, args.with_completion, args.only, args.source, args.check)
    if args.examples and any(full_setup):
        ap.error(
            "--examples only fetches the example clips: drop it for the full setup (which fetches them too)"
        )
    if args.check and (args.source or args.no_download):
        ap.error("--check only verifies: drop --from / --no-download")
    if args.source and args.no_download:
        ap.error("--no-download installs nothing: drop --from")
    if not (args.examples or args.check) and args.ckpt_root is None:
        ap.error("--ckpt-root is required (or --check to verify, --examples to fetch only the example clips)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # huggingface_hub's client logs every request
    if args.examples:
        return examples_only(args.config)

    overrides = ["completion.enable=true"] if args.with_completion else []
    if args.check:
        if args.ckpt_root is not None:
            overrides.append(f"paths.ckpt_root={json.dumps(str(args.ckpt_root.expanduser().resolve()))}")
        try:
            cfg = load_config(args.config, overrides=overrides)
            items = checkpoints(cfg, args.only)
        except (ConfigError, ValueError) as exc:
            log.error("%s", exc)
            return 1
        return finish([(verify(c), None) for c in items], cfg, [])

    ckpt_root = args.ckpt_root.expanduser().resolve()
    source = MirrorSource(args.source) if args.source else HubSource()
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
        items = checkpoints(cfg, args.only)
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    if args.no_download:
        return finish([(verify(c), None) for c in items], cfg, [])
    results = [install(c, source) for c in items]
    example_failures = [] if args.no_examples or args.only else fetch_examples(cfg)
    return finish(results, cfg, example_failures)


if __name__ == "__main__":
    sys.exit(main())
