"""What the app can do with the checkpoints and models it has, and how the page says so.

`capabilities` decides which model-backed actions work; `layout_spec` turns that into the start-up
page (models status panel, button labels and states) that `body4d.ui.layout.build_layout` draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from body4d.checkpoints import CheckpointReport
from body4d.config import Config
from models.errors import setup_hint

# Labels of the model-backed buttons (a disabled one adds its blocker in brackets).
AUTO_DETECT = "Auto-detect people"
MASK_GENERATION = "Mask Generation"
GENERATE_4D = "4D Generation"
CANCEL = "Cancel"
# Blocker of every SAM-3 action when its checkpoint is absent (the click status adds the fix).
NEEDS_SAM3 = "needs the SAM-3 checkpoint"
GATED_NOTE = (
    "SAM-3 and SAM-3D-Body are gated: accept their licences on Hugging Face "
    "(facebook/sam3, facebook/sam-3d-body-dinov3) and set HF_TOKEN before running it."
)
TINY_WARNING = (
    "## ⚠️ TINY TEST CHECKPOINTS — RESULTS ARE MEANINGLESS\n"
    "Some checkpoints are tiny random-weight test models (written by `body4d.testing.tiny_checkpoints`). "
    "Masks and 3D bodies made with them are noise. For real results run "
    "`{fix}` and restart the app."
)


@dataclass(frozen=True)
class Capabilities:
    """Which model-backed actions are available; a blocker is the reason shown to the user.

    Attributes:
        segment: why clicks cannot make masks and Mask Generation / Auto-detect are off
            (None = available).
        reconstruct: why 4D Generation is off (None = available).
    """

    segment: str | None
    reconstruct: str | None


@dataclass(frozen=True)
class ButtonSpec:
    """Label and enabled state of a button (disabled buttons say why in their label)."""

    label: str
    interactive: bool


@dataclass(frozen=True)
class LayoutSpec:
    """What the page shows at start-up.

    Attributes:
        models_markdown: the models status panel (Markdown).
        examples: example gallery items ``(thumbnail RGB uint8[h, w, 3], caption)``.
        auto_detect, mask_generation, generate_4d, cancel: model-backed buttons.
    """

    models_markdown: str
    examples: list[tuple[np.ndarray, str]] = field(default_factory=list)
    auto_detect: ButtonSpec = ButtonSpec(AUTO_DETECT, False)
    mask_generation: ButtonSpec = ButtonSpec(MASK_GENERATION, False)
    generate_4d: ButtonSpec = ButtonSpec(GENERATE_4D, False)
    cancel: ButtonSpec = ButtonSpec(CANCEL, False)


def capabilities(
    cfg: Config,
    report: CheckpointReport,
    segmenter_loaded: bool = False,
    reconstructor_loaded: bool = False,
    load_error: str | None = None,
) -> Capabilities:
    """Decide what the app can do from the checkpoint report and the models actually loaded.

    Args:
        cfg: app configuration (where the checkpoints should be).
        report: which checkpoints are present.
        segmenter_loaded: SAM-3 (tracker and detector) is loaded.
        reconstructor_loaded: SAM-3D-Body is loaded.
        load_error: why loading the models failed (None = it did not fail).
    """
    missing = {Path(item.path) for item in report.missing}
    sam3_missing = Path(cfg.sam3.ckpt_path) in missing
    body = cfg.sam_3d_body
    camera = cfg.camera.ckpt_path
    body_paths = [body.ckpt_path, body.config_path, body.mhr_path] + ([camera] if camera else [])
    body_missing = any(Path(p) in missing for p in body_paths)
    if sam3_missing:
        segment: str | None = NEEDS_SAM3
    elif load_error is not None:
        segment = "the models failed to load: see the models panel"
    elif not segmenter_loaded:
        segment = "SAM-3 is not loaded"
    else:
        segment = None
    if sam3_missing and body_missing:
        reconstruct: str | None = "needs the SAM-3 and SAM-3D-Body checkpoints"
    elif body_missing:
        reconstruct = "needs the SAM-3D-Body checkpoints"
    elif segment is not None:
        reconstruct = segment
    elif not reconstructor_loaded:
        reconstruct = "SAM-3D-Body is not loaded"
    else:
        reconstruct = None
    return Capabilities(segment=segment, reconstruct=reconstruct)


def segment_fix(caps: Capabilities, report: CheckpointReport) -> str:
    """Why clicks make no mask preview, with the fix when it is a missing checkpoint.

    Args:
        caps: what the app can do (``caps.segment`` is not None).
        report: where the checkpoints should be (for the setup command).
    """
    if caps.segment == NEEDS_SAM3:
        return (
            f"masks need the SAM-3 checkpoint. Run `{setup_hint(report.ckpt_root)}` "
            "(SAM-3 is gated: accept its licence on Hugging Face and set HF_TOKEN first)."
        )
    return f"masks are unavailable ({caps.segment})."


def _button(label: str, blocker: str | None) -> ButtonSpec:
    if blocker is None:
        return ButtonSpec(label, interactive=True)
    return ButtonSpec(f"{label} ({blocker})", interactive=False)


def layout_spec(
    report: CheckpointReport,
    caps: Capabilities,
    examples: list[tuple[np.ndarray, str]],
    load_error: str | None = None,
) -> LayoutSpec:
    """Everything `build_layout` needs to know: texts, gallery items, button states.

    Args:
        report: which checkpoints are present.
        caps: what the app can do.
        examples: gallery items ``(thumbnail RGB uint8[h, w, 3], caption)``.
        load_error: why the models failed to load, or None.
    """
    can_run = caps.segment is None
    return LayoutSpec(
        models_markdown=models_markdown(report, load_error, loaded=can_run),
        examples=examples,
        auto_detect=_button(AUTO_DETECT, caps.segment),
        mask_generation=_button(MASK_GENERATION, caps.segment),
        generate_4d=_button(GENERATE_4D, caps.reconstruct),
        cancel=ButtonSpec(CANCEL, interactive=can_run),
    )


def models_markdown(report: CheckpointReport, load_error: str | None = None, loaded: bool = False) -> str:
    """The status panel: one line per checkpoint, and the exact fix when any is missing.

    Args:
        report: which checkpoints are present (tiny test ones are flagged loudly).
        load_error: why the models failed to load (shown with the fix), or None.
        loaded: the models are loaded and the model buttons work.
    """
    fix = setup_hint(report.ckpt_root)
    if report.ok:
        if load_error is not None:
            head = (
                f"**Models failed to load:** {load_error}\n\n**Fix:** re-download the checkpoints with "
                f"`{fix}` (or repair the file named above) and restart the app. Upload, scrubbing and "
                "click prompts still work."
            )
        elif loaded:
            head = "**Models:** all checkpoints present and loaded: clicks show live masks."
        else:
            head = "**Models:** all checkpoints present."
        if report.uses_tiny:
            head = TINY_WARNING.format(fix=fix) + "\n\n" + head
        return f"{head}\n\n```\n{report.text()}\n```"
    names = ", ".join(item.name for item in report.missing)
    return (
        f"**Models: {len(report.missing)} checkpoint(s) missing** ({names}). Upload, frame scrubbing, "
        "preview and click prompts work now; masks and 3D bodies need the checkpoints.\n\n"
        f"**Fix:** run `{fix}`. {GATED_NOTE}\n\n```\n{report.text()}\n```"
    )
