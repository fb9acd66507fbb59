"""Correct one target after Mask Generation without starting over (the app's Repair button).

The session's clicks of the chosen target (its earlier ones and those added since Mask
Generation) re-propagate that target alone into the run's masks (`body4d.driver.repair_masks`);
the other targets keep theirs. The next 4D Generation then redoes only the people whose masks
changed. Afterwards ``session.mask_prompts`` holds the clicks that now describe the masks (the
target's clicks replaced), so 4D Generation does not take the repair for changed clicks and
remake the masks. Plain Python: the events module turns the outcome into widgets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from body4d.config import Config
from body4d.driver import PipelineModels, repair_masks
from body4d.errors import InputError
from body4d.jobs import ProgressFn
from body4d.session import Session
from body4d.stages.repair import MaskRepair
from body4d.types import Prompts
from body4d.ui.runs import running
from body4d.video import open_video
from models.frames import PromptError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairOutcome:
    """A finished repair.

    Attributes:
        repair: what changed (span re-propagated, person-frames changed).
        mask_video: the updated Segmentation Result video, if written.
        message: status sentence for the user.
    """

    repair: MaskRepair
    mask_video: Path | None
    message: str


def repair_target(
    cfg: Config,
    models: PipelineModels,
    session: Session,
    target_id: int,
    progress: ProgressFn | None = None,
) -> RepairOutcome:
    """Re-propagate ``target_id`` from the frames of its clicks added since Mask Generation.

    A target that is not in the masks yet (a person who appears later) is added on every frame
    SAM-3 follows it to. Uses its own decoder and holds the session's ``run_lock`` like the other
    runs; the session's ``cancel`` flag stops it with nothing changed.

    Args:
        cfg: app configuration (``repair`` and ``sam3`` sections).
        models: the shared networks (SAM-3 is needed).
        session: the caller's session, whose masks stage is done.
        target_id: the target to correct.
        progress: called with ``("masks", fraction, message)``.

    Returns:
        The `RepairOutcome` (its message names the target, the frames re-propagated and how many
        frames changed).

    Raises:
        InputError: no video, no masks yet, an unknown target, a target without (new) clicks,
            SAM-3 not loaded, SAM-3 refused the clicks, a run still going, or another video loaded
            meanwhile.
        Cancelled: the user pressed Cancel (nothing changed).
    """
    with session.lock:
        info = session.require_info()
        run = session.run
        assert run is not None
        if not run.is_done("masks"):
            raise InputError(
                "there are no masks to correct yet: press Mask Generation first, then click on the frame "
                "where a target's mask is wrong and repair that target"
            )
        if target_id not in session.targets:
            raise InputError(
                f"there is no Target {target_id} (targets are {', '.join(map(str, session.targets))}): "
                "pick the target to correct from the targets list"
            )
        clicks = tuple(session.targets[target_id])
        before = session.mask_prompts
        earlier = () if before is None else before.clicks.get(target_id, ())
        added = [c for c in clicks if c not in earlier]
        path, max_side = session.video_path, session.max_side
    if not added:
        raise InputError(
            f"Target {target_id} has no new clicks since Mask Generation: go to a frame where its mask "
            "is wrong, add a positive click on the person (or a negative one on what is not them), "
            "then repair it"
        )
    if models.sam3 is None:
        raise InputError("repairing masks needs SAM-3, which is not loaded: see the models panel")
    assert path is not None
    try:
        with running(session) as run, open_video(path, max_side=max_side) as video:
            repair = repair_masks(
                video,
                run,
                cfg,
                models,
                target_id,
                clicks,
                from_frames=[c.frame for c in added],
                progress=progress,
                should_cancel=session.cancel.is_set,
            )
    except PromptError as exc:
        raise InputError(str(exc)) from exc
    with session.lock:
        if session.run is not run:
            raise InputError(
                f"another video was loaded while the repair went on: it stays in run folder {run.run_id}"
            )
        if before is not None:
            session.mask_prompts = Prompts({**before.clicks, target_id: clicks})
    message = repair_message(repair, info.n_frames, min(c.frame for c in added))
    log.info("session %s: %s", session.session_id, message)
    return RepairOutcome(repair, run.mask_video_path(), message)


def repair_message(repair: MaskRepair, n_frames: int, start: int) -> str:
    """The status sentence of a repair: target, frames re-propagated, frames and people changed.

    Args:
        repair: the repair.
        n_frames: frames in the video.
        start: the first frame of the correcting clicks.
    """
    lo, hi = repair.span
    where = f"Target {repair.target} was re-propagated from frame {start} over frames {lo}-{hi}"
    if repair.new:
        where += " (a new target: to both ends of the video)"
    elif (lo, hi) != (0, n_frames - 1):
        where += " (beyond them its new mask agrees with the old one)"
    if not repair.changed:
        return f"{where}; no mask changed, so there is nothing to redo."
    people = ", ".join(map(str, repair.changed))
    return (
        f"{where}; {repair.frames_changed} of {n_frames} frames changed (masks of target(s) {people}). "
        "Press 4D Generation: only the changed people are computed again."
    )
