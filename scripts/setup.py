"""Point the config at a checkpoint folder and download every checkpoint into it.

Usage:
    python scripts/setup.py --ckpt-root /data/checkpoints [--with-completion] [--config configs/body4d.yaml]

Steps:
1. rewrite ``paths.ckpt_root`` in the config (other keys untouched);
2. download what is missing with ``huggingface_hub`` (existing non-empty files are skipped;
   a repository folder counts as done only with its ``.complete`` marker);
3. verify with the same check the app uses and exit 1 if anything is still missing.

SAM-3 and SAM-3D-Body are gated: accept their licences on huggingface.co and export
``HF_TOKEN`` (or ``huggingface-cli login``) first. This is the only place body4d downloads.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from body4d.config import DEFAULT_CONFIG, ConfigError, load_config  # noqa: E402
from body4d.run_dir import atomic_write_bytes  # noqa: E402
from models.registry import checkpoint_report  # noqa: E402

log = logging.getLogger("body4d.setup")
COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class Download:
    """One Hugging Face repository (or part of it) placed under ``ckpt_root / folder``."""

    repo_id: str
    folder: str
    allow: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    gated: bool = False
    completion_only: bool = False


DOWNLOADS = (
    # transformers files only: the 3.4 GB original sam3.pt is not needed by body4d.
    Download("facebook/sam3", "sam3", ignore=("sam3.pt",), gated=True),
    Download(
        "facebook/sam-3d-body-dinov3",
        "sam-3d-body-dinov3",
        allow=("model.ckpt", "model_config.yaml", "assets/mhr_model.pt"),
        gated=True,
    ),
    Download("Ruicheng/moge-2-vitl-normal", "moge-2-vitl-normal", allow=("model.pt",)),
    Download(
        "kaihuac/diffusion-vas-amodal-segmentation", "diffusion-vas-amodal-segmentation", completion_only=True
    ),
    Download(
        "kaihuac/diffusion-vas-content-completion", "diffusion-vas-content-completion", completion_only=True
    ),
    Download("depth-anything/Depth-Anything-V2-Large-hf", "depth-anything-v2-large-hf", completion_only=True),
)


def write_ckpt_root(config_path: Path, ckpt_root: Path) -> None:
    """Set ``paths.ckpt_root`` in the YAML text, keeping comments and every other key."""
    text = config_path.read_text(encoding="utf-8")
    pattern = re.compile(r"^(paths:\s*\n(?:\s*#.*\n)*\s+ckpt_root:)\s*.*$", re.MULTILINE)
    if not pattern.search(text):
        raise SystemExit(
            f"{config_path} has no paths.ckpt_root key: restore it from git (configs/body4d.yaml)"
        )
    new = pattern.sub(lambda m: f"{m.group(1)} {ckpt_root}", text, count=1)
    atomic_write_bytes(config_path, new.encode("utf-8"))


def is_done(target: Path, item: Download) -> bool:
    if item.allow and all("*" not in a for a in item.allow):
        return all((target / a).is_file() and (target / a).stat().st_size > 0 for a in item.allow)
    return (target / COMPLETE_MARKER).is_file()


def fetch(item: Download, ckpt_root: Path, token: str | None) -> str | None:
    """Download one repository; return None on success or a one-line reason."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    target = ckpt_root / item.folder
    if is_done(target, item):
        log.info("[SKIP] %s already in %s", item.repo_id, target)
        return None
    log.info("[GET ] %s -> %s", item.repo_id, target)
    try:
        snapshot_download(
            item.repo_id,
            local_dir=target,
            allow_patterns=list(item.allow) if item.allow else None,
            ignore_patterns=list(item.ignore) if item.ignore else None,
            token=token,
        )
    except GatedRepoError:
        return (
            f"{item.repo_id} is gated: accept its licence at https://huggingface.co/{item.repo_id} "
            "and export HF_TOKEN with a token of that account"
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        return f"{item.repo_id} could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    (target / COMPLETE_MARKER).write_text("ok\n")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt-root", type=Path, required=True, help="folder that will hold every checkpoint")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file to update")
    ap.add_argument(
        "--with-completion", action="store_true", help="also get Diffusion-VAS + Depth Anything V2"
    )
    ap.add_argument("--no-download", action="store_true", help="only rewrite the config and verify")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    ckpt_root = args.ckpt_root.expanduser().resolve()
    ckpt_root.mkdir(parents=True, exist_ok=True)
    write_ckpt_root(args.config, ckpt_root)
    log.info("config %s: paths.ckpt_root = %s", args.config, ckpt_root)

    token = os.environ.get("HF_TOKEN") or None
    failures = []
    if not args.no_download:
        for item in DOWNLOADS:
            if item.completion_only and not args.with_completion:
                continue
            reason = fetch(item, ckpt_root, token)
            if reason:
                log.error("[BLOCKED] %s", reason)
                failures.append(reason)

    overrides = ["completion.enable=true"] if args.with_completion else None
    try:
        cfg = load_config(args.config, overrides=overrides, env={})
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
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
