"""Disk use of a run folder per artefact kind: the estimate shown before a run, the free-space check.

`estimate_disk` predicts the bytes a run writes from the video's size and length, the number of
people and the outputs the config turns on. Its constants were measured by
``benchmarks/long_video.py`` (street footage scaled to 1280x720, tiny models whose meshes
have the real MHR's 18,439 vertices; benchmarks/README.md, long videos), as the blocks the files
take on disk (a 200-byte JSON takes a 4 KiB block). Image and video sizes scale with the pixels
of a frame; they depend on the footage (sharp, busy scenes compress less), so the estimate is a
guide, not a bound. Occlusion completion (``completion/``, only the hidden person-frames) is not
counted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from body4d.config import Config
from body4d.errors import InputError
from body4d.memory import format_bytes
from body4d.recipe import STAGES
from body4d.run_dir import LABELS_IN_MEMORY_MAX_BYTES, RunDir

# Artefact kinds: name -> the run-folder entries (`RunDir` names) they cover.
KINDS: dict[str, tuple[str, ...]] = {
    "frame images": (RunDir.IMAGES,),
    "masks": (RunDir.MASKS,),
    "mask images": (RunDir.MASKS_VIS,),
    "mask video": (RunDir.MASK_VIDEO,),
    "bodies": (RunDir.BODIES_RAW, RunDir.BODIES_COMPLETED, RunDir.BODIES),
    "completion": (RunDir.COMPLETION, RunDir.COMPLETION_REPORT),
    "meshes": (RunDir.MESHES,),
    "cameras": (RunDir.FOCALS,),
    "4D video": (RunDir.RESULT_VIDEO,),
    "4D videos per person": (RunDir.INDIVIDUAL_VIDEOS,),
    "rendered frames": (RunDir.RENDERED_FRAMES, RunDir.RENDERED_INDIVIDUAL),
    "bundles": (RunDir.PEOPLE, RunDir.SCENE_GLB),
}
OTHER = "other"
# The label volume memory-mapped in .scratch/ during a run (deleted when it ends).
SCRATCH = "scratch (during the run)"
# The config key that turns each optional kind off.
SWITCHES = {
    "frame images": "outputs.frame_images",
    "mask images": "outputs.mask_images",
    "meshes": "export.obj",
    "cameras": "export.obj",
    "4D video": "render.enable",
    "4D videos per person": "render.individual",
    "rendered frames": "render.frames",
    "bundles": "bundle.glb",
}
# The stage that writes each kind (a resume does not rewrite the kinds of stages already done).
STAGE_OF = {
    "frame images": "masks",
    "masks": "masks",
    "mask images": "masks",
    "mask video": "masks",
    SCRATCH: "masks",
    "bodies": "recover",
    "meshes": "export",
    "cameras": "export",
    "4D video": "render",
    "4D videos per person": "render",
    "rendered frames": "render",
    "bundles": "bundle",
}

# Measured by benchmarks/long_video.py (disk blocks, 1280x720 street footage at 30 fps, CRF 18,
# JPEG quality 95; benchmarks/README.md, long videos). Per pixel of a frame:
FRAME_JPEG_BYTES_PER_PIXEL = 0.275  # images/<frame>.jpg
MASK_VIS_BYTES_PER_PIXEL = 1.08  # masks_vis/<frame>.png (PNG, zlib level 1)
MASK_VIDEO_BYTES_PER_PIXEL = 0.0121  # video_mask_<run_id>.mp4, per frame
RESULT_VIDEO_BYTES_PER_PIXEL = 0.0222  # 4d_<run_id>.mp4 and each 4d_individual_<id>.mp4, per frame
RENDERED_JPEG_BYTES_PER_PIXEL = 0.298  # rendered_frames*/<frame>.jpg
# Per frame, per person on it:
MASK_PNG_BYTES = 4096  # masks/<frame>.png (2.7 KB: one 4 KiB block)
BODY_ROW_BYTES = 6700  # one row of bodies_raw, bodies_completed and bodies.npz together
OBJ_BYTES = 1_618_000  # mesh_4d_individual/<id>/<frame>.obj (18,439 coloured vertices, 36,874 faces)
CAMERA_JSON_BYTES = 4096  # focal_4d_individual/<id>/<frame>.json (180 bytes: one block)
BVH_FRAME_BYTES = 4500  # people/<id>/<id>.bvh
PERSON_NPZ_FRAME_BYTES = 2048  # people/<id>/<id>.npz
GLB_FRAME_BYTES = 153_000  # people/<id>/<id>.glb and the scene GLB, per animated frame (quantised)


@dataclass(frozen=True)
class DiskEstimate:
    """What a run is expected to write.

    Attributes:
        frames: the video's frames.
        people: the people it was estimated for.
        kinds: artefact kind -> bytes (only the kinds the run writes).
    """

    frames: int
    people: int
    kinds: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def describe(self) -> str:
        """``"4.1 GB: meshes 3.9 GB, mask video 95.2 MB, ..."`` (largest kinds first); ``"none"``
        when nothing is left to write (a resume of a finished run)."""
        if not self.kinds:
            return "none"
        parts = [f"{kind} {format_bytes(n)}" for kind, n in sorted(self.kinds.items(), key=lambda kv: -kv[1])]
        return f"{format_bytes(self.total)}: " + ", ".join(parts)

    def switches(self) -> list[str]:
        """``"export.obj (3.9 GB)"``: each config key that turns off kinds written, with their bytes, largest first."""
        optional: dict[str, int] = {}
        for kind, n in self.kinds.items():
            if kind in SWITCHES:
                optional[SWITCHES[kind]] = optional.get(SWITCHES[kind], 0) + n
        return [f"{key} ({format_bytes(n)})" for key, n in sorted(optional.items(), key=lambda kv: -kv[1])]


def estimate_disk(
    cfg: Config,
    frames: int,
    height: int,
    width: int,
    people: int = 1,
    *,
    stages: tuple[str, ...] = STAGES,
) -> DiskEstimate:
    """The bytes a run of ``frames`` frames of ``width`` x ``height`` with ``people`` people writes.

    Args:
        cfg: the configuration (which optional outputs are on).
        frames: frames of the video.
        height: frame height, px (as the stages see it).
        width: frame width, px.
        people: people followed (each seen on every frame: an upper bound).
        stages: the stages that will run (a resume leaves out those done; ``--stop-after`` the later).

    Returns:
        The estimate per artefact kind.
    """
    pixels = height * width
    per_person_frames = frames * people
    kinds: dict[str, int] = {
        "masks": frames * MASK_PNG_BYTES,
        "mask video": round(frames * pixels * MASK_VIDEO_BYTES_PER_PIXEL),
        "bodies": per_person_frames * BODY_ROW_BYTES,
    }
    if frames * pixels > LABELS_IN_MEMORY_MAX_BYTES:
        kinds[SCRATCH] = frames * pixels
    if cfg.outputs.frame_images:
        kinds["frame images"] = round(frames * pixels * FRAME_JPEG_BYTES_PER_PIXEL)
    if cfg.outputs.mask_images:
        kinds["mask images"] = round(frames * pixels * MASK_VIS_BYTES_PER_PIXEL)
    if cfg.export.obj:
        kinds["meshes"] = per_person_frames * OBJ_BYTES
        kinds["cameras"] = per_person_frames * CAMERA_JSON_BYTES
    if cfg.render.enable:
        video = round(frames * pixels * RESULT_VIDEO_BYTES_PER_PIXEL)
        kinds["4D video"] = video
        if cfg.render.individual:
            kinds["4D videos per person"] = people * video
        if cfg.render.frames:
            images = 1 + (people if cfg.render.individual else 0)
            kinds["rendered frames"] = round(images * frames * pixels * RENDERED_JPEG_BYTES_PER_PIXEL)
    bundles = per_person_frames * (PERSON_NPZ_FRAME_BYTES + (BVH_FRAME_BYTES if cfg.bundle.bvh else 0))
    if cfg.bundle.glb:
        bundles += (people + 1) * min(frames, cfg.bundle.glb_max_frames) * GLB_FRAME_BYTES
    kinds["bundles"] = bundles
    kept = {kind: n for kind, n in kinds.items() if STAGE_OF[kind] in stages and n > 0}
    return DiskEstimate(frames, people, kept)


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or would hold it: its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def artefact_kind(rel: str, run_id: str) -> str:
    """The kind of the file at ``rel`` (POSIX, relative to the run folder ``run_id``); `OTHER` for
    the manifest, small records and anything else."""
    top = Path(rel).parts[0]
    for kind, entries in KINDS.items():
        if top in (e.format(run_id=run_id) for e in entries):
            return kind
    return OTHER


class DiskSpaceError(InputError):
    """Not enough free disk space for a run; the message names the need, the free space and the fix."""


def shortfall(estimate: DiskEstimate, folder: Path) -> str | None:
    """Why ``folder``'s disk cannot take ``estimate`` (the need, the free space and the fix), or None."""
    free = free_bytes(folder)
    if free >= estimate.total:
        return None
    switches = estimate.switches()
    off = f", or set to false in the config (--set KEY=false): {', '.join(switches)}" if switches else ""
    return (
        f"not enough free disk space in {folder} for this run: it needs about {estimate.describe()}, "
        f"and the disk has {format_bytes(free)} free: free {format_bytes(estimate.total - free)} more, "
        f"set runtime.output_dir (body4d run --output_dir) to a bigger disk{off}"
    )
