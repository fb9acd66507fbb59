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
REPAIR = "Re-track Target"
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
        auto_detect, repair, mask_generation, generate_4d, cancel: model-backed buttons (repair
            re-tracks the selected target from its new clicks after Mask Generation).
        system_markdown: the system panel (device, renderer, models resident, GPU memory).
        examples_hint: how to fetch the example videos not downloaded yet ("" = all there).
        upload_limits: the upload limits, e.g. ``"; up to 1024 MB and 10 min"`` (appended to the
            upload label).
    """

    models_markdown: str
    examples: list[tuple[np.ndarray, str]] = field(default_factory=list)
    auto_detect: ButtonSpec = ButtonSpec(AUTO_DETECT, False)
    repair: ButtonSpec = ButtonSpec(REPAIR, False)
    mask_generation: ButtonSpec = ButtonSpec(MASK_GENERATION, False)
    generate_4d: ButtonSpec = ButtonSpec(GENERATE_4D, False)
    cancel: ButtonSpec = ButtonSpec(CANCEL, False)
    upload_limits: str = ""
    system_markdown: str = ""
    examples_hint: str = ""


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
    limits: str = "",
    system: str = "",
    examples_hint: str = "",
) -> LayoutSpec:
    """Everything `build_layout` needs to know: texts, gallery items, button states.

    Args:
        report: which checkpoints are present.
        caps: what the app can do.
        examples: gallery items ``(thumbnail RGB uint8[h, w, 3], caption)``.
        load_error: why the models failed to load, or None.
        limits: the upload limits (`upload_limits`).
        system: the system panel (`body4d.ui.system.SystemStatus.markdown`).
        examples_hint: `body4d.examples.fetch_hint` for the examples not downloaded yet.
    """
    can_run = caps.segment is None
    return LayoutSpec(
        models_markdown=models_markdown(report, load_error, loaded=can_run),
        examples=examples,
        auto_detect=_button(AUTO_DETECT, caps.segment),
        repair=_button(REPAIR, caps.segment),
        mask_generation=_button(MASK_GENERATION, caps.segment),
        generate_4d=_button(GENERATE_4D, caps.reconstruct),
        cancel=ButtonSpec(CANCEL, interactive=can_run),
        upload_limits=limits,
        system_markdown=system,
        examples_hint=examples_hint,
    )


def upload_limits(cfg: Config) -> str:
    """The upload limits for the upload label (``app.max_upload_mb``, ``app.max_video_seconds``),
    e.g. ``"; up to 1024 MB and 10 min"``; empty when unlimited."""
    parts = []
    if cfg.app.max_upload_mb:
        parts.append(f"{cfg.app.max_upload_mb:g} MB")
    seconds = cfg.app.max_video_seconds
    if seconds:
        parts.append(f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s")
    return f"; up to {' and '.join(parts)}" if parts else ""


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
