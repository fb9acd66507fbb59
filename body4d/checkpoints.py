"""Which checkpoints the configuration needs and whether each is there, with the fix when not.

Nothing here loads a network or reads a weight: the app's status panel, ``body4d check`` and
``body4d doctor`` use `checkpoint_report()` to say exactly what is missing and how to get it.
``scripts/setup.py`` verifies the files themselves (`body4d.checkpoint_verify`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from body4d.checkpoint_verify import is_tiny
from body4d.config import Config
from models.errors import setup_hint


@dataclass(frozen=True)
class CheckpointStatus:
    """One required checkpoint file or folder.

    Attributes:
        name: human name of the model.
        path: where the config expects it.
        present: every file its loader reads is there (see ``problem``).
        needed_for: what the model does in the pipeline.
        gated: the Hugging Face repository needs an accepted licence and HF_TOKEN.
        tiny: it is a tiny random test checkpoint (useless for real results).
        problem: why it is not usable when not present (e.g. which files are missing), else "".
    """

    name: str
    path: Path
    present: bool
    needed_for: str
    gated: bool
    tiny: bool
    problem: str = ""


@dataclass(frozen=True)
class CheckpointReport:
    items: tuple[CheckpointStatus, ...]
    ckpt_root: Path

    @property
    def ok(self) -> bool:
        return all(i.present for i in self.items)

    @property
    def missing(self) -> tuple[CheckpointStatus, ...]:
        return tuple(i for i in self.items if not i.present)

    @property
    def uses_tiny(self) -> bool:
        return any(i.tiny for i in self.items if i.present)

    def text(self) -> str:
        """Human-readable status: one line per checkpoint (and why it is missing), then the fix."""
        lines = []
        for i in self.items:
            mark = "ok" if i.present else "MISSING"
            extra = " (TINY TEST CHECKPOINT: random weights, results are meaningless)" if i.tiny else ""
            lines.append(f"[{mark}] {i.name}: {i.path}{extra} — {i.needed_for}")
            if i.problem:
                lines.append(f"    {i.problem}")
        if self.missing:
            lines.append(
                f"Missing checkpoints: run `{setup_hint(self.ckpt_root)}` "
                "(SAM-3 and SAM-3D-Body are gated: accept their licences on Hugging Face and set HF_TOKEN first)."
            )
        else:
            lines.append("All checkpoints present.")
        return "\n".join(lines)


def _generic_problem(path: Path) -> str | None:
    """Generic check: a non-empty file, or a model folder holding a JSON config outside download debris."""
    if path.is_file():
        return None if path.stat().st_size > 0 else "empty file (an interrupted download?)"
    if not path.is_dir():
        return "not found"
    if any(p.suffix == ".json" for p in path.rglob("*") if ".cache" not in p.parts):
        return None
    return "no model config in the folder (only download debris?)"


def checkpoint_report(cfg: Config) -> CheckpointReport:
    """Status of every checkpoint the configuration asks for.

    SAM-3, MoGe-2, Diffusion-VAS and Depth Anything are checked by their adapters' own file lists
    (`models.sam3.snapshot_problem`, `models.moge.checkpoint_problem`,
    `models.diffusion_vas.folder_problem`, `models.depth.checkpoint_problem`): "present" means
    every file their loader reads is there.
    """
    from models.depth import checkpoint_problem as depth
    from models.diffusion_vas import folder_problem as vas
    from models.moge import checkpoint_problem as moge
    from models.sam3 import snapshot_problem as sam3

    s3b = cfg.sam_3d_body
    body = "3D body mesh recovery"
    entries: list[tuple[str, str, str, bool, Callable[[Path], str | None]]] = [
        (
            "SAM-3 (facebook/sam3)",
            cfg.sam3.ckpt_path,
            "clicks, mask propagation, person detection",
            True,
            sam3,
        ),
        ("SAM-3D-Body weights", s3b.ckpt_path, body, True, _generic_problem),
        ("SAM-3D-Body config", s3b.config_path, body, True, _generic_problem),
        ("MHR body model", s3b.mhr_path, body, True, _generic_problem),
    ]
    if cfg.camera.ckpt_path:
        entries.append(("MoGe-2 ViT-L normal", cfg.camera.ckpt_path, "camera intrinsics", False, moge))
    if cfg.completion.enable:
        c = cfg.completion
        entries += [
            (
                "Diffusion-VAS amodal segmentation",
                c.model_path_mask,
                "amodal masks of occluded people",
                False,
                vas,
            ),
            (
                "Diffusion-VAS content completion",
                c.model_path_rgb,
                "completing occluded people",
                False,
                vas,
            ),
            (
                "Depth Anything V2 Large",
                c.model_path_depth,
                "depth condition of the amodal masks",
                False,
                depth,
            ),
        ]
    items = []
    for name, path_str, needed_for, gated, check in entries:
        path = Path(path_str)
        problem = check(path)
        present = problem is None
        folder = path if path.is_dir() else path.parent
        tiny = present and is_tiny(folder)
        items.append(CheckpointStatus(name, path, present, needed_for, gated, tiny, problem or ""))
    return CheckpointReport(tuple(items), Path(cfg.paths.ckpt_root))
