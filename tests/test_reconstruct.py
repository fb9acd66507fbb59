"""End to end: video -> masks -> camera -> SAM-3D-Body -> smoothing -> exports, on tiny real models."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from body4d.cli import main
from body4d.config import load_config
from body4d.masks import encode_palette_png, mask_box, read_palette_png
from body4d.recipe import STAGES
from body4d.run_dir import RunDir
from body4d.video import encode_video, probe
from tests.conftest import run_folders
from tests.conftest_sam3dbody import load_folder
from tests.test_bvh import parse_bvh

T, H, W = 12, 96, 128
FPS = Fraction(10)
NUM_VERTS = 18439
# Which frames each id is visible on: id 1 always but the last frame; id 3 leaves midway; id 5 is
# hidden on frames 6-7 (a short gap); id 7 is seen once. Frame 11 has nobody. Ids are not contiguous.
VISIBLE = {1: range(0, 11), 3: range(0, 6), 5: [2, 3, 4, 5, 8, 9, 10], 7: [4]}
BOXES = {1: (8, 10, 30, 80), 3: (40, 20, 60, 90), 5: (70, 15, 95, 85), 7: (100, 30, 120, 70)}


@pytest.fixture(scope="module")
def ckpt_root(tiny_ckpt_root: Path) -> Path:
    return tiny_ckpt_root


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic clip of coloured 'people' and the matching palette masks."""
    root = tmp_path_factory.mktemp("scene")
    masks_dir = root / "masks"
    masks_dir.mkdir()
    frames = []
    for t in range(T):
        frame = np.full((H, W, 3), 200, np.uint8)
        labels = np.zeros((H, W), np.uint8)
        for obj_id, frames_visible in VISIBLE.items():
            if t in frames_visible:
                x0, y0, x1, y1 = BOXES[obj_id]
                x0 += t  # people walk right
                x1 += t
                frame[y0:y1, x0:x1] = (40 * obj_id % 255, 80, 160)
                labels[y0:y1, x0:x1] = obj_id
        frames.append(frame)
        write_palette_png(masks_dir / f"{t:05d}.png", labels)
    video = encode_video(frames, root / "people.mp4", FPS)
    return video, masks_dir


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(encode_palette_png(labels))


def _run(args: list[str], ckpt_root: Path, out: Path) -> int:
    return main(
        [
            "run",
            *args,
            "--output_dir",
            str(out),
            "--set",
            f"paths.ckpt_root={ckpt_root}",
            "--set",
            "runtime.device=cpu",
        ]
    )


def _run_dir(out: Path) -> Path:
    (run,) = run_folders(out)
    return run


def test_masks_in_bodies_out(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    video, masks_dir = scene
    assert _run(["--input_video", str(video), "--masks", str(masks_dir)], ckpt_root, tmp_path) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["obj_ids"] == [1, 3, 5, 7]
    assert summary["stages"] == list(STAGES)
    run = _run_dir(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(manifest["stages"][s]["status"] == "done" for s in summary["stages"])

    camera = json.loads((run / "camera.json").read_text())
    K = np.array(camera["K"])
    assert K[0, 0] == K[1, 1] > 0 and camera["source"] == "moge"

    with np.load(run / "bodies.npz") as bodies, np.load(run / "bodies_raw.npz") as raw:
        assert list(bodies["obj_ids"]) == [1, 3, 5, 7]
        for obj_id, visible in VISIBLE.items():
            visible = list(visible)
            frames = bodies[f"id{obj_id}/frames"]
            assert list(frames) == list(range(visible[0], visible[-1] + 1))
            observed = raw[f"id{obj_id}/valid"]
            assert [int(f) for f in frames[observed]] == visible
            # Identity routing: each row's box is that id's own mask box on that frame.
            for row, f in enumerate(frames):
                if observed[row]:
                    labels = read_palette_png(masks_dir / f"{int(f):05d}.png")
                    assert np.allclose(raw[f"id{obj_id}/box"][row], mask_box(labels == obj_id))
            # Shape is locked per identity: one value over every valid frame.
            shape = bodies[f"id{obj_id}/shape"][bodies[f"id{obj_id}/valid"]]
            assert np.allclose(shape, shape[0])
        # Keypoints of every valid row, placed in the camera frame and projected with K.
        kp3d, kp2d = bodies["id5/keypoints_3d"], bodies["id5/keypoints_2d"]
        assert kp3d.shape == (len(bodies["id5/frames"]), 70, 3) and kp2d.shape[-1] == 2
        valid5 = bodies["id5/valid"]
        assert np.isfinite(kp3d[valid5]).all() and np.isnan(kp3d[~valid5]).all()
        p = kp3d[valid5][0, 0]
        assert kp2d[valid5][0, 0] == pytest.approx(
            [K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]], rel=1e-4
        )
        # The 2-frame gap of id 5 is filled by interpolation (max_gap 30), flagged as such.
        filled5 = bodies["id5/filled"]
        assert [int(f) for f in bodies["id5/frames"][filled5]] == [6, 7]

        for obj_id in VISIBLE:
            valid_frames = {int(f) for f in bodies[f"id{obj_id}/frames"][bodies[f"id{obj_id}/valid"]]}
            objs = {int(p.stem) for p in (run / "mesh_4d_individual" / str(obj_id)).glob("*.obj")}
            jsons = {int(p.stem) for p in (run / "focal_4d_individual" / str(obj_id)).glob("*.json")}
            assert objs == valid_frames == jsons
        assert not (run / "mesh_4d_individual" / "2").exists()

        rec = json.loads((run / "focal_4d_individual" / "3" / "00000002.json").read_text())
        assert set(rec) == {"focal_length", "principal_point", "camera"}
        row = int(np.flatnonzero(bodies["id3/frames"] == 2)[0])
        assert np.allclose(rec["camera"], bodies["id3/cam_t"][row], atol=1e-5)
        assert rec["principal_point"] == pytest.approx([K[0, 2], K[1, 2]])

    mesh = trimesh.load(run / "mesh_4d_individual" / "5" / "00000009.obj", process=False)
    assert mesh.vertices.shape == (NUM_VERTS, 3)
    assert np.isfinite(mesh.vertices).all()

    # The 4D result: all people over the footage, and each alone, at the input's exact fps.
    for path in [
        run / f"4d_{run.name}.mp4",
        *(run / "4d_individual" / f"4d_individual_{i}.mp4" for i in VISIBLE),
    ]:
        info = probe(path)
        assert (info.n_frames, info.width, info.height, info.fps) == (T, W, H, FPS), path
    assert manifest["stages"]["render"]["frames"] == T
    assert not (run / "rendered_frames").exists(), "per-frame JPGs only when asked"

    # Per-person bundles: which frames are observed and which interpolated; GLB, npz, json.
    info5 = json.loads((run / "people" / "5" / "5.json").read_text())
    assert info5["observed"] == VISIBLE[5] and info5["interpolated"] == [6, 7] and info5["completed"] == []
    assert info5["frame_range"] == [2, 10] and info5["fps"] == float(FPS) and info5["units"] == "metres"
    assert info5["glb_frames"] == list(range(2, 11))
    with np.load(run / "people" / "5" / "5.npz") as person5:
        assert person5["frames"].tolist() == list(range(2, 11)) and person5["K"].shape == (3, 3)
    # The skeleton BVH: every frame of the range, the 127 MHR joints, as the JSON lists it.
    assert info5["files"]["bvh"] == "5.bvh" and info5["bvh"]["units"] == "centimetres"
    bvh5 = parse_bvh((run / "people" / "5" / "5.bvh").read_text())
    assert len(bvh5.motion) == 9 and len(bvh5.names) == 127
    assert bvh5.frame_time == pytest.approx(1 / float(FPS), abs=1e-8)
    scene = trimesh.load(run / f"4d_{run.name}.glb", force="scene")
    assert len(scene.geometry) == len(VISIBLE)
    assert all(g.vertices.shape == (NUM_VERTS, 3) for g in scene.geometry.values())
    person = trimesh.load(run / "people" / "7" / "7.glb", force="scene")
    assert len(person.geometry) == 1


def test_resume_skips_done_stages(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    video, masks_dir = scene
    assert (
        _run(
            ["--input_video", str(video), "--masks", str(masks_dir), "--stop-after", "recover"],
            ckpt_root,
            tmp_path,
        )
        == 0
    )
    run = _run_dir(tmp_path)
    first = json.loads((run / "manifest.json").read_text())["stages"]
    assert set(first) == {"masks", "camera", "recover"}
    assert _run(["--input_video", str(video), "--resume", run.name], ckpt_root, tmp_path) == 0
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["recover"]["finished"] == first["recover"]["finished"], "a done stage must not rerun"
    assert stages["export"]["status"] == "done"
    assert any((run / "mesh_4d_individual" / "1").glob("*.obj"))


def test_prompts_through_sam3_to_meshes(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    video, _ = scene
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"2": [{"frame": 3, "x": 20, "y": 40, "positive": True}]}))
    out = tmp_path / "out"
    assert _run(["--input_video", str(video), "--prompts", str(prompts)], ckpt_root, out) == 0
    run = _run_dir(out)
    assert json.loads((run / "segmentation.json").read_text())["obj_ids"] == [2]
    objs = sorted((run / "mesh_4d_individual" / "2").glob("*.obj"))
    assert objs, "the prompted target must get meshes"
    assert (run / f"video_mask_{run.name}.mp4").is_file()


def test_bad_masks_are_refused_with_the_reason(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    video, masks_dir = scene
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    for t in range(T):
        write_palette_png(empty / f"{t:05d}.png", np.zeros((H, W), np.uint8))
    assert _run(["--input_video", str(video), "--masks", str(empty)], ckpt_root, tmp_path / "o1") == 2
    assert "every mask is empty" in capsys.readouterr().err
    run = _run_dir(tmp_path / "o1")
    assert json.loads((run / "manifest.json").read_text())["stages"]["masks"]["status"] == "failed"

    few = tmp_path / "few"
    few.mkdir()
    write_palette_png(few / "0.png", np.zeros((H, W), np.uint8))
    assert _run(["--input_video", str(video), "--masks", str(few)], ckpt_root, tmp_path / "o2") == 2
    assert "holds 1 PNG masks but the video has 12 frames" in capsys.readouterr().err

    small = tmp_path / "small"
    small.mkdir()
    for t in range(T):
        write_palette_png(small / f"{t:05d}.png", np.ones((H // 2, W), np.uint8))
    assert _run(["--input_video", str(video), "--masks", str(small)], ckpt_root, tmp_path / "o3") == 2
    assert "masks must have the frame size" in capsys.readouterr().err


def test_missing_checkpoints_exit_2(scene, tmp_path: Path, capsys) -> None:
    video, masks_dir = scene
    assert (
        _run(["--input_video", str(video), "--masks", str(masks_dir)], tmp_path / "nothing", tmp_path / "o")
        == 2
    )
    err = capsys.readouterr().err
    assert "scripts/setup.py" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir()), (
        "no run folder before models load"
    )


def test_objs_are_the_smoothed_bodies_in_camera_space(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    video, masks_dir = scene
    assert _run(["--input_video", str(video), "--masks", str(masks_dir)], ckpt_root, tmp_path) == 0
    run = RunDir.open(tmp_path, _run_dir(tmp_path).name, load_config())
    folder = ckpt_root / "sam-3d-body-dinov3"
    model = load_folder(folder)
    with np.load(run.path("bodies.npz")) as bodies:
        frames = bodies["id5/frames"]
        rows = [int(np.flatnonzero(frames == f)[0]) for f in (3, 6)]  # observed and gap-filled
        params = [
            bodies[f"id5/{n}"][rows]
            for n in ("global_rot", "body_pose", "hand_pose", "shape", "scale", "expression")
        ]
        cam_t = bodies["id5/cam_t"][rows]
    verts, _ = model.mesh_from_params(*params)
    for k, f in enumerate((3, 6)):
        mesh = trimesh.load(run.path(f"mesh_4d_individual/5/{f:08d}.obj"), process=False)
        assert np.abs(mesh.vertices - (verts[k] + cam_t[k])).max() < 1e-5


def test_new_masks_make_later_stages_stale(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    video, masks_dir = scene
    assert _run(["--input_video", str(video), "--masks", str(masks_dir)], ckpt_root, tmp_path) == 0
    run = _run_dir(tmp_path)
    first = json.loads((run / "manifest.json").read_text())["stages"]
    assert (
        _run(
            [
                "--input_video",
                str(video),
                "--masks",
                str(masks_dir),
                "--resume",
                run.name,
                "--force",
                "--stop-after",
                "masks",
            ],
            ckpt_root,
            tmp_path,
        )
        == 0
    )
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert [stages[s]["status"] for s in ("recover", "smooth", "export")] == ["stale"] * 3
    assert stages["camera"] == first["camera"], "the camera reads only the video: still done"
    assert _run(["--input_video", str(video), "--resume", run.name], ckpt_root, tmp_path) == 0
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(stages[s]["status"] == "done" for s in stages)
    assert stages["export"]["started"] > first["export"]["started"], "stale stages run again"
    assert stages["camera"]["finished"] == first["camera"]["finished"]


def test_frame_folder_input_uses_configured_rate(scene, ckpt_root: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from body4d.video import open_video, probe

    video, masks_dir = scene
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(open_video(video)):
        Image.fromarray(frame).save(folder / f"f{i}.png")
    args = ["--input_video", str(folder), "--masks", str(masks_dir), "--stop-after", "masks"]
    assert _run([*args, "--set", "video.folder_fps=24"], ckpt_root, tmp_path / "o") == 0
    run = _run_dir(tmp_path / "o")
    assert json.loads((run / "manifest.json").read_text())["video"]["fps"] == "24/1"
    assert not (run / "images").exists(), "no frame images by default (outputs.frame_images)"
    assert probe(run / "masks").n_frames == T
    assert probe(run / f"video_mask_{run.name}.mp4").fps == 24


def test_headless_progress_is_logged_per_tenth(caplog) -> None:
    import logging

    from body4d.driver import _log_progress

    report = _log_progress()
    with caplog.at_level(logging.INFO, logger="body4d.driver"):
        for i in range(101):
            report("masks", i / 100, f"frame {i}")
        report("camera", 0.0, "start")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 12  # 0 %, 10 %, ..., 100 % of masks, then the camera start
    assert lines[-2].startswith("masks 100%") and lines[-1].startswith("camera   0%")


def test_manifest_records_checkpoints_and_flags_tiny_ones(
    scene, ckpt_root: Path, tmp_path: Path, capsys
) -> None:
    video, masks_dir = scene
    assert (
        _run(
            ["--input_video", str(video), "--masks", str(masks_dir), "--stop-after", "camera"],
            ckpt_root,
            tmp_path,
        )
        == 0
    )
    ckpts = json.loads((_run_dir(tmp_path) / "manifest.json").read_text())["checkpoints"]
    assert ckpts["SAM-3D-Body weights"]["tiny"] is True
    assert ckpts["SAM-3D-Body weights"]["path"] == str(ckpt_root / "sam-3d-body-dinov3" / "model.ckpt")


# ------------------------------------------------------------------ the driver, in process
@pytest.fixture(scope="module")
def tiny_models(ckpt_root: Path):
    from body4d.driver import load_models

    cfg = load_config(overrides=[f"paths.ckpt_root={ckpt_root}", "runtime.device=cpu"])
    return cfg, load_models(cfg, sam3=False, detector=False)


def _reconstruct(video_path: Path, run: RunDir, tiny_models, **kwargs):  # noqa: ANN001, ANN202
    from body4d.driver import reconstruct
    from body4d.video import open_video

    cfg, models = tiny_models
    with open_video(video_path) as video:
        result = reconstruct(video, run, cfg, models, **kwargs)
        return result, video.frames_decoded


def test_in_process_run_decodes_each_pass_once_and_resumes_a_finished_run(scene, tiny_models, tmp_path):
    video, masks_dir = scene
    cfg, _ = tiny_models
    run = RunDir.create(tmp_path, cfg, input_path=video)
    result, decoded = _reconstruct(video, run, tiny_models, masks_dir=masks_dir)
    assert result.done == STAGES
    assert result.obj_ids == (1, 3, 5, 7) and result.root == run.root
    assert result.artefacts["export"] == ["mesh_4d_individual", "focal_4d_individual"]
    # The input's fingerprint decodes frames 0, 6 and 11 (forward: all 12 of this short clip; a
    # long video seeks). One pass writes the mask outputs, one feeds SAM-3D-Body, one is drawn on
    # by the render; the camera decodes forward to its last sampled frame (select_frames(12, 5)
    # ends at 10) instead of seeking for each: 12 + 12 + 11 + 12 + 12.
    assert decoded == 59
    stages = run.manifest["stages"]
    # Resuming a finished run (pressing 4D Generation again) checks the input's fingerprint, reads
    # nothing back and redoes nothing.
    again, decoded = _reconstruct(video, RunDir.open(tmp_path, run.run_id, cfg), tiny_models)
    assert again.done == result.done and decoded == 12
    assert RunDir.open(tmp_path, run.run_id, cfg).manifest["stages"] == stages
    video_section = run.manifest["video"]
    assert (video_section["n_frames"], video_section["source_width"], video_section["rotation"]) == (T, W, 0)


def test_a_rerun_stage_leaves_no_files_of_frames_or_people_that_are_gone(scene, tiny_models, tmp_path):
    video, masks_dir = scene
    cfg, _ = tiny_models
    run = RunDir.create(tmp_path, cfg, input_path=video)
    _reconstruct(video, run, tiny_models, masks_dir=masks_dir)
    ghost = [run.mesh_path(9, 0), run.mesh_path(1, 11), run.focal_path(1, 11)]  # no id 9; id 1 ends at 10
    for path in ghost:
        run.write_bytes(path, b"from an earlier run")
    stages_before = run.manifest["stages"]
    result, _ = _reconstruct(video, run, tiny_models, masks_dir=masks_dir, force=True, stop_after="masks")
    assert result.done == ("masks",)
    stale = run.manifest["stages"]
    assert [stale[s]["status"] for s in ("recover", "smooth", "export")] == ["stale"] * 3
    assert stale["camera"]["status"] == "done"  # it reads only the video
    assert not any(p.exists() for p in ghost), "the stale stages' files of gone people are removed"
    _reconstruct(video, run, tiny_models)
    assert not any(p.exists() for p in ghost)
    assert run.manifest["stages"]["export"]["started"] > stages_before["export"]["started"]
    meshes = {
        p.relative_to(run.path(RunDir.MESHES)).as_posix() for p in run.path(RunDir.MESHES).rglob("*.obj")
    }
    assert len(meshes) == run.manifest["stages"]["export"]["files"]


def test_the_masks_stage_runs_without_sam3_only_for_imported_masks(scene, tiny_models, tmp_path):
    video, _ = scene
    cfg, _ = tiny_models
    run = RunDir.create(tmp_path, cfg, input_path=video)
    with pytest.raises(RuntimeError, match="SAM-3 model is not loaded"):
        _reconstruct(video, run, tiny_models, stop_after="masks")
    assert run.manifest["stages"]["masks"]["status"] == "failed"


def test_the_public_surface_runs_the_recipe(scene, ckpt_root: Path, tmp_path: Path) -> None:
    """The README's library example, on the tiny models."""
    import body4d

    video_path, masks_dir = scene
    cfg = body4d.load_config(overrides=[f"paths.ckpt_root={ckpt_root}", f"runtime.output_dir={tmp_path}"])
    models = body4d.load_models(cfg, sam3=False, detector=False)
    with body4d.open_video(video_path) as video:
        run = body4d.RunDir.create(cfg.runtime.output_dir, cfg, input_path=video_path)
        result = body4d.reconstruct(video, run, cfg, models, masks_dir=masks_dir, stop_after="smooth")
    assert isinstance(result, body4d.RunResult) and result.done[-1] == "smooth"
    bodies = run.load_tracks(body4d.RunDir.BODIES)
    assert sorted(bodies) == [1, 3, 5, 7] and all(isinstance(t, body4d.BodyTrack) for t in bodies.values())
    assert bodies[5].keypoints_3d.shape == (len(bodies[5].frames), 70, 3)


def test_export_render_and_bundle_switches(scene, tiny_models, tmp_path):
    """OBJs, GLBs, BVHs and per-person videos off; rendered JPGs on, on white."""
    video, masks_dir = scene
    cfg, models = tiny_models
    cfg = cfg.replace(
        **{
            "export.obj": False,
            "bundle.glb": False,
            "bundle.bvh": False,
            "render.individual": False,
            "render.frames": True,
            "render.background": "white",
        }
    )
    run = RunDir.create(tmp_path, cfg, input_path=video)
    _reconstruct(video, run, (cfg, models), masks_dir=masks_dir)
    root = run.root
    assert not (root / "mesh_4d_individual").exists() and run.manifest["stages"]["export"]["files"] == 0
    assert not (root / "4d_individual").exists() and not (root / f"4d_{run.run_id}.glb").exists()
    person = root / "people" / "5"
    assert sorted(p.name for p in person.iterdir()) == ["5.json", "5.npz"]
    info = json.loads((person / "5.json").read_text())
    assert info["files"] == {"glb": None, "npz": "5.npz", "bvh": None} and info["glb_frames"] is None
    jpgs = sorted((root / "rendered_frames").glob("*.jpg"))
    assert [p.name for p in jpgs] == [f"{i:08d}.jpg" for i in range(T)]
    empty = np.asarray(Image.open(jpgs[11]))  # frame 11 has nobody: all white
    assert empty.shape == (H, W, 3) and empty.min() >= 250
    assert probe(root / f"4d_{run.run_id}.mp4").n_frames == T
