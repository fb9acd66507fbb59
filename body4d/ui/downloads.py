"""Downloads offered by the app: a zip of a run folder, streamed to disk (never built in memory).

The zip holds the run's deliverables: the manifest, masks, mask visualisations (when written:
``outputs.mask_images``), the mask video, camera and body files, occlusion completion results,
the 4D result videos, the per-person bundles (``people/<id>/``: animated GLB, BVH, npz, json) and
the scene GLB, and rendered frames when they were asked for. The per-frame OBJ meshes and camera JSONs (thousands of files, most of a run's
bytes) are zipped only with ``zip_meshes`` (``app.zip_meshes``). It leaves out the per-frame
copies of the input (``images/``: the input video is the source), the browser preview of the
input, earlier zips, and per-person folders of targets that are not in the current
``bodies.npz`` (left over from an earlier run with other targets).
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from body4d.jobs import Job
from body4d.run_dir import MANIFEST, RunDir

log = logging.getLogger(__name__)

# Run-folder entries never zipped: the decoded frames and the input's browser preview.
EXCLUDED_TOP = frozenset({RunDir.IMAGES, RunDir.PREVIEW, RunDir.SCRATCH})
# Per-frame meshes and camera records: zipped only when asked (app.zip_meshes).
PER_FRAME_MESHES = frozenset({RunDir.MESHES, RunDir.FOCALS})
# Per-person output folders: only the ids of the current bodies.npz are zipped.
PER_PERSON_DIRS = frozenset({RunDir.MESHES, RunDir.FOCALS, RunDir.PEOPLE, RunDir.RENDERED_INDIVIDUAL})
# OBJ text compresses about 4x already at level 1; higher levels cost much more time for little.
ZIP_COMPRESSLEVEL = 1
DOWNLOADS_STAGE = "downloads"


def person_files(run: RunDir) -> list[Path]:
    """Each current person's bundle files (GLB, BVH, npz, json) that exist, by id."""
    return [
        path
        for obj_id in sorted(current_body_ids(run), key=int)
        for suffix in (".glb", ".bvh", ".npz", ".json")
        if (path := run.person_path(int(obj_id), suffix)).is_file()
    ]


def run_downloads(run: RunDir) -> list[Path]:
    """What the app offers for a finished run: its zip (if written), ``bodies.npz`` and each
    person's bundle files."""
    zip_path = run.path(RunDir.ZIP)
    bodies = run.path(RunDir.BODIES)
    head = [p for p in (zip_path, bodies) if p.is_file()]
    return head + person_files(run)


def current_body_ids(run: RunDir) -> set[str]:
    """Object ids (as folder names) in the run's ``bodies.npz``; empty when there is none."""
    path = run.path(RunDir.BODIES)
    if not path.is_file():
        return set()
    with np.load(path) as data:
        return {str(int(i)) for i in data["obj_ids"]}


def run_files(run: RunDir, *, zip_meshes: bool = False) -> Iterator[Path]:
    """Files of the run folder that belong in its zip, relative to the run root, sorted."""
    ids = current_body_ids(run)
    excluded = EXCLUDED_TOP if zip_meshes else EXCLUDED_TOP | PER_FRAME_MESHES
    zip_name = run.path(RunDir.ZIP).name
    for path in sorted(run.root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(run.root)
        parts = rel.parts
        if parts[0] in excluded or rel.name == zip_name or rel.name.endswith(".part"):
            continue
        if rel.name.startswith(".") or (
            parts[0] in PER_PERSON_DIRS and len(parts) > 2 and parts[1] not in ids
        ):
            continue
        yield rel


def zip_run(run: RunDir, *, zip_meshes: bool = False, job: Job | None = None) -> Path:
    """Write ``body4d_<run_id>.zip`` at the run root (atomic: temporary file + rename).

    Entries are stored under ``<run_id>/`` so unpacking makes one folder; the manifest is zipped
    first. Once written, the zip is recorded in the manifest as the ``downloads`` step's artefact.

    Args:
        run: the run folder.
        zip_meshes: include the per-frame OBJs and camera JSONs.
        job: progress per file and cancellation (a cancelled zip leaves no file behind).

    Returns:
        The zip's path.

    Raises:
        body4d.jobs.Cancelled: the job was cancelled.
    """
    target = run.path(RunDir.ZIP)
    name = target.name
    files = [rel for rel in run_files(run, zip_meshes=zip_meshes) if rel.as_posix() != MANIFEST]
    job = job or Job(DOWNLOADS_STAGE)
    with (
        run.atomic_file(name) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=ZIP_COMPRESSLEVEL) as zf,
    ):
        zf.write(run.path(MANIFEST), f"{run.run_id}/{MANIFEST}")
        for done, rel in enumerate(files, start=1):
            job.check()
            zf.write(run.root / rel, f"{run.run_id}/{rel.as_posix()}")
            job.report(done / len(files), f"zipping the run: file {done}/{len(files)}")
        count = len(files) + 1
    run.record_artefacts(DOWNLOADS_STAGE, [name])
    log.info("zip %s written (%d files, %.1f MB)", target, count, target.stat().st_size / 2**20)
    return target
