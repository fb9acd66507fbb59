"""`body4d.disk_use`: the disk estimate of a run per artefact kind, and the free-space check."""

from __future__ import annotations

from pathlib import Path

import pytest

import body4d.disk_use
from body4d.config import load_config
from body4d.disk_use import SCRATCH, artefact_kind, estimate_disk, free_bytes, shortfall
from body4d.memory import format_bytes
from body4d.run_dir import LABELS_IN_MEMORY_MAX_BYTES

CFG = load_config(env={})
H, W = 720, 1280


def test_every_kind_grows_with_the_frames_and_the_per_person_kinds_with_the_people() -> None:
    short = estimate_disk(CFG, 60, H, W, 1)  # its label volume is held in memory
    long = estimate_disk(CFG, 600, H, W, 1)
    assert set(short.kinds) == set(long.kinds) - {SCRATCH}
    for kind, n in short.kinds.items():
        if kind == "bundles":  # the GLBs hold at most bundle.glb_max_frames frames
            assert n < long.kinds[kind] < 10 * n
        else:
            assert long.kinds[kind] == pytest.approx(10 * n, rel=1e-6), kind
    two = estimate_disk(CFG, 60, H, W, 2)
    for kind in ("meshes", "cameras", "bodies", "4D videos per person"):
        assert two.kinds[kind] == 2 * short.kinds[kind], kind
    assert (
        two.kinds["mask video"] == short.kinds["mask video"]
        and two.kinds["4D video"] == short.kinds["4D video"]
    )
    assert short.total == sum(short.kinds.values()) and two.total > short.total
    # Pixels: a frame of four times the pixels, about four times the image and video bytes.
    big = estimate_disk(CFG, 60, 2 * H, 2 * W, 1)
    assert big.kinds["mask video"] == pytest.approx(4 * short.kinds["mask video"], rel=1e-6)
    assert big.kinds["meshes"] == short.kinds["meshes"]


def test_optional_outputs_appear_only_when_on() -> None:
    default = estimate_disk(CFG, 300, H, W, 1)
    assert not {"frame images", "mask images", "rendered frames"} & set(default.kinds)
    assert {"masks", "mask video", "bodies", "meshes", "cameras", "4D video", "bundles"} <= set(default.kinds)
    on = CFG.replace(**{"outputs.frame_images": True, "outputs.mask_images": True, "render.frames": True})
    everything = estimate_disk(on, 300, H, W, 1)
    extra = {"frame images", "mask images", "rendered frames"}
    assert set(everything.kinds) == set(default.kinds) | extra
    assert everything.total == default.total + sum(everything.kinds[k] for k in extra)
    off = CFG.replace(
        **{"export.obj": False, "render.enable": False, "bundle.glb": False, "bundle.bvh": False}
    )
    least = estimate_disk(off, 300, H, W, 1)
    assert set(least.kinds) == {"masks", "mask video", "bodies", "bundles", SCRATCH}  # bundles: the npz
    assert least.kinds["bundles"] < default.kinds["bundles"] / 10


def test_the_label_volume_counts_while_it_is_memory_mapped() -> None:
    fits = LABELS_IN_MEMORY_MAX_BYTES // (H * W)
    assert SCRATCH not in estimate_disk(CFG, fits, H, W).kinds
    assert estimate_disk(CFG, fits + 1, H, W).kinds[SCRATCH] == (fits + 1) * H * W


def test_only_the_stages_that_run_are_counted() -> None:
    masks_only = estimate_disk(CFG, 300, H, W, 1, stages=("masks",))
    assert set(masks_only.kinds) == {"masks", "mask video", SCRATCH}
    resumed = estimate_disk(CFG, 300, H, W, 1, stages=("render", "bundle"))
    assert set(resumed.kinds) == {"4D video", "4D videos per person", "bundles"}


def test_shortfall_names_the_need_the_free_space_and_the_keys(tmp_path: Path, monkeypatch) -> None:
    estimate = estimate_disk(CFG, 3000, H, W, 1)
    monkeypatch.setattr(body4d.disk_use, "free_bytes", lambda _folder: estimate.total + 1)
    assert shortfall(estimate, tmp_path) is None
    monkeypatch.setattr(body4d.disk_use, "free_bytes", lambda _folder: 10**6)
    problem = shortfall(estimate, tmp_path)
    assert problem is not None and str(tmp_path) in problem and "1.0 MB free" in problem
    assert "export.obj (" in problem and "render.individual (" in problem and "runtime.output_dir" in problem
    # The biggest optional kind is named first: turning it off saves the most.
    assert problem.index("export.obj (") < problem.index("render.individual (")


def test_free_bytes_of_a_folder_not_made_yet_is_its_disks(tmp_path: Path) -> None:
    assert free_bytes(tmp_path / "not" / "yet") == free_bytes(tmp_path) > 0


def test_files_are_sorted_into_kinds_by_their_top_folder() -> None:
    rid = "20261123_213400_123_0a1b2c3d"
    assert artefact_kind("mesh_4d_individual/1/00000003.obj", rid) == "meshes"
    assert artefact_kind(f"video_mask_{rid}.mp4", rid) == "mask video"
    assert artefact_kind("4d_individual/4d_individual_2.mp4", rid) == "4D videos per person"
    assert artefact_kind("rendered_frames_individual/2/00000001.jpg", rid) == "rendered frames"
    assert artefact_kind("bodies_raw.npz", rid) == "bodies"
    assert artefact_kind("manifest.json", rid) == "other"


def test_a_run_with_nothing_left_to_run_is_described_as_writing_nothing() -> None:
    finished = estimate_disk(CFG, 300, H, W, 1, stages=())
    assert finished.kinds == {} and finished.total == 0 and finished.describe() == "none"
    whole = estimate_disk(CFG, 300, H, W, 1)
    assert whole.describe().startswith(f"{format_bytes(whole.total)}: meshes ")
