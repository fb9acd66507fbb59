"""Correcting one target after Mask Generation, and the 4D Generation that redoes only what changed.

Tiny real SAM-3 and SAM-3D-Body checkpoints (random weights). The old masks are imported label
maps, so what agrees with the re-propagated target is known exactly: a first repair of the target
as a new one (propagated to both ends) gives its new masks ``N``, and the old track of a second
run is ``N`` except on frames 3-7, where the repair must stop.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from body4d.config import Config, load_config
from body4d.driver import PipelineModels, load_models, reconstruct, repair_masks
from body4d.errors import InputError
from body4d.masks import encode_palette_png, read_palette_png
from body4d.recipe import STAGES
from body4d.run_dir import RunDir
from body4d.session import Session
from body4d.stages.recover import MIN_MASK_PIXELS
from body4d.stages.repair import masks_agree
from body4d.types import Click
from body4d.ui.loading import load_video
from body4d.ui.repair import repair_target
from body4d.video import encode_video, open_video
from tests.conftest import two_people_frames

T, H, W = 10, 64, 96
FPS = Fraction(10)
CLICK = Click(5, 15.0, 25.0, True)  # the correcting click of target 1
SPAN = (3, 7)  # frames where the old track of target 1 differs from its re-propagation
AGREE = {"repair.agree_frames": 2, "repair.agree_iou": 0.9}


def frames() -> list[np.ndarray]:
    out = two_people_frames(T, H, W)
    for f in out:
        f[2:12, 70:90] = (40, 200, 60)  # a third, small target
    return out


def box(t: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[10:40, 5 + 2 * t : 30 + 2 * t] = True
    return mask


@pytest.fixture(scope="module")
def tiny(tiny_ckpt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, PipelineModels]:
    out = tmp_path_factory.mktemp("repair_out")
    cfg = load_config(
        overrides=[f"paths.ckpt_root={tiny_ckpt_root}", "runtime.device=cpu", f"runtime.output_dir={out}"],
        env={},
    ).replace(**AGREE)
    return cfg, load_models(cfg, detector=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode_video(frames(), tmp_path_factory.mktemp("repair_clip") / "clip.mp4", FPS)


def imported_run(cfg: Config, models: PipelineModels, clip: Path, labels: np.ndarray, folder: Path, **kw):
    """A run whose masks are ``labels`` (imported), run up to ``stop_after`` (default all)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(T):
        (folder / f"{t:05d}.png").write_bytes(encode_palette_png(labels[t]))
    run = RunDir.create(cfg.runtime.output_dir, cfg, input_path=clip)
    with open_video(clip) as video:
        reconstruct(video, run, cfg, models, masks_dir=folder, **kw)
    return run


def repair(cfg: Config, models: PipelineModels, clip: Path, run: RunDir, target: int, clicks, **kw):
    with open_video(clip) as video:
        return repair_masks(video, run, cfg, models, target, clicks, **kw)


def labels_of(run: RunDir) -> np.ndarray:
    return np.stack([read_palette_png(run.mask_path(t)) for t in range(T)])


@pytest.fixture(scope="module")
def new_masks(tiny, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """``bool[T, H, W]``: target 1 re-propagated from `CLICK` on every frame (added as a new target)."""
    cfg, models = tiny
    labels = np.zeros((T, H, W), np.uint8)
    labels[:, 30:60, 60:90] = 3
    run = imported_run(cfg, models, clip, labels, tmp_path_factory.mktemp("n") / "m", stop_after="masks")
    result = repair(cfg, models, clip, run, 1, [CLICK])
    assert result.new and result.span == (0, T - 1), "a new target is propagated to both ends"
    masks = labels_of(run) == 1
    assert masks.any(axis=(1, 2)).all(), "the tiny tracker reports the object on every frame"
    return masks


def old_labels(new_masks: np.ndarray) -> np.ndarray:
    """Person 3 on every frame, person 2 on frames 0-2 only, target 1 on top: ``N`` outside `SPAN`,
    a box that disagrees with ``N`` inside it."""
    labels = np.zeros((T, H, W), np.uint8)
    labels[:, 30:60, 60:90] = 3
    labels[:3, 2:12, 70:90] = 2
    for t in range(T):
        one = box(t) if SPAN[0] <= t <= SPAN[1] else new_masks[t]
        assert SPAN[0] <= t <= SPAN[1] or masks_agree(one, new_masks[t], 1.0)
        labels[t][one] = 1
    for t in range(SPAN[0], SPAN[1] + 1):
        assert not masks_agree(box(t), new_masks[t], AGREE["repair.agree_iou"])
    return labels


@pytest.fixture
def finished(tiny, clip: Path, new_masks: np.ndarray, tmp_path: Path):
    """A finished run on `old_labels`, then target 1 repaired from `CLICK`."""
    cfg, models = tiny
    before = old_labels(new_masks)
    run = imported_run(cfg, models, clip, before, tmp_path / "masks")
    bodies = {name: dict(np.load(run.path(name))) for name in (RunDir.BODIES_RAW, RunDir.BODIES)}
    objs = {p.relative_to(run.root): p.read_bytes() for p in run.path(RunDir.MESHES).rglob("*.obj")}
    result = repair(cfg, models, clip, run, 1, [CLICK])
    return run, before, result, bodies, objs


def test_repair_changes_only_the_target_within_the_span_and_stops_where_it_agrees(finished, new_masks):
    run, before, result, _, _ = finished
    after = labels_of(run)
    assert result.span == SPAN and not result.new
    entry = run.manifest["stages"]["masks"]
    assert entry["repairs"][0]["frames"] == list(SPAN) and entry["repairs"][0]["target"] == 1
    lo, hi = SPAN
    outside = np.r_[0:lo, hi + 1 : T]
    assert np.array_equal(after[outside], before[outside]), "frames outside the span are bit-identical"
    inside = slice(lo, hi + 1)
    assert np.array_equal(after[inside] == 1, new_masks[inside]), "the repaired target wins on its pixels"
    moved = after[inside] != before[inside]
    assert ((before[inside] == 1) | (after[inside] == 1))[moved].all(), "only the target's pixels moved"
    # The changed person-frames recorded are exactly those whose mask differs.
    expected = {
        obj_id: tuple(t for t in range(T) if not np.array_equal(before[t] == obj_id, after[t] == obj_id))
        for obj_id in (1, 2, 3)
    }
    assert result.changed == {k: v for k, v in expected.items() if v}
    assert 2 not in result.changed and result.changed[1] == tuple(range(lo, hi + 1))
    stages = run.manifest["stages"]
    assert stages["camera"]["status"] == "done", "the camera does not read the masks"
    assert all(stages[s]["status"] == "stale" for s in STAGES[2:])


def test_the_next_4d_generation_recomputes_only_the_changed_person_frames(tiny, clip: Path, finished):
    cfg, models = tiny
    run, before, result, bodies, objs = finished
    after = labels_of(run)
    estimated: list[int] = []
    predict = models.body.predict

    def counting(items, **kwargs):  # noqa: ANN001, ANN202
        estimated.append(len(items))
        return predict(items, **kwargs)

    models.body.predict = counting
    try:
        with open_video(clip) as video:
            done = reconstruct(video, RunDir.open(cfg.runtime.output_dir, run.run_id, cfg), cfg, models)
    finally:
        models.body.predict = predict
    assert done.done == STAGES
    changed = [
        (obj_id, t)
        for obj_id, ts in result.changed.items()
        for t in ts
        if np.count_nonzero(after[t] == obj_id) >= MIN_MASK_PIXELS
    ]
    stages = RunDir.open(cfg.runtime.output_dir, run.run_id, cfg).manifest["stages"]
    assert stages["recover"]["incremental"] and stages["recover"]["person_frames_estimated"] == len(changed)
    assert sum(estimated) == len(changed) < T * 3, "not frames x people"
    assert stages["smooth"]["people_smoothed"] == sorted(result.changed)
    # Person 2 did not change: its rows and OBJ files are byte-identical.
    for name, old in bodies.items():
        with np.load(run.path(name)) as new:
            for key in (k for k in old if k.startswith("id2/")):
                assert new[key].tobytes() == old[key].tobytes(), key
    person2 = {rel: data for rel, data in objs.items() if rel.parts[1] == "2"}
    assert person2 and all((run.root / rel).read_bytes() == data for rel, data in person2.items())
    assert stages["export"]["written"] < stages["export"]["files"] == len(list(run.root.rglob("*.obj")))
    # The repaired rows are those of a whole recovery on the repaired masks.
    with np.load(run.path(RunDir.BODIES_RAW)) as raw:
        frames1 = raw["id1/frames"][raw["id1/valid"]]
        assert list(frames1) == [t for t in range(T) if np.count_nonzero(after[t] == 1) >= MIN_MASK_PIXELS]


def test_new_masks_still_invalidate_everything(tiny, clip: Path, finished, tmp_path: Path):
    cfg, models = tiny
    run = finished[0]
    again = shutil.copytree(run.path(RunDir.MASKS), tmp_path / "again")
    with open_video(clip) as video:
        reconstruct(video, run, cfg, models, masks_dir=again, stop_after="masks", force=True)
        stages = run.manifest["stages"]
        assert stages["masks"]["repairs"] == []
        assert all("masks_revision" not in stages[s] for s in STAGES[1:])
        reconstruct(video, run, cfg, models, stop_after="recover")
    recover = run.manifest["stages"]["recover"]
    assert not recover["incremental"]
    with np.load(run.path(RunDir.BODIES_RAW)) as raw:
        rows = sum(int(raw[f"id{i}/valid"].sum()) for i in raw["obj_ids"])
    assert recover["person_frames_estimated"] == rows


def test_a_target_added_on_a_later_frame_gets_masks_and_a_body_track(tiny, clip: Path, tmp_path: Path):
    cfg, models = tiny
    labels = np.zeros((T, H, W), np.uint8)
    labels[:, 30:60, 60:90] = 3
    run = imported_run(cfg, models, clip, labels, tmp_path / "masks")
    result = repair(cfg, models, clip, run, 4, [Click(6, 80.0, 6.0, True)])
    assert result.new and result.span == (0, T - 1)
    after = labels_of(run)
    assert all((after[t] == 4).any() for t in range(6, T)), "present from its frame on"
    assert run.load_masks().track.obj_ids == (3, 4) and run.load_masks().first_frames[4] == 6
    with open_video(clip) as video:
        reconstruct(video, run, cfg, models)
    bodies = run.load_tracks(RunDir.BODIES)
    assert sorted(bodies) == [3, 4] and bodies[4].valid[bodies[4].frames >= 6].all()
    assert (run.path(RunDir.MESHES) / "4").is_dir() and (run.root / "people" / "4" / "4.npz").is_file()


def test_the_app_handler_repairs_and_keeps_4d_generation_from_remaking_masks(tiny, clip: Path):
    cfg, models = tiny
    session = Session(session_id="repair")
    load_video(cfg, session, clip)
    session.add_click(Click(0, 15.0, 25.0, True))
    with pytest.raises(InputError, match="no masks to correct yet: press Mask Generation first"):
        repair_target(cfg, models, session, 1)
    prompts = session.prompts()
    with open_video(clip) as video:
        reconstruct(video, session.run, cfg, models, prompts=prompts, stop_after="masks")
    session.mask_prompts = prompts
    with pytest.raises(InputError, match=r"there is no Target 7 .*pick the target to correct"):
        repair_target(cfg, models, session, 7)
    with pytest.raises(InputError, match="Target 1 has no new clicks since Mask Generation"):
        repair_target(cfg, models, session, 1)
    session.add_target()
    with pytest.raises(InputError, match="Target 2 has no new clicks"):
        repair_target(cfg, models, session, 2)
    session.select_target(1)
    session.add_click(CLICK)
    calls: list[tuple[str, float]] = []
    outcome = repair_target(cfg, models, session, 1, lambda s, f, m: calls.append((s, f)))
    assert outcome.message.startswith("Target 1 was re-propagated from frame 5 over frames ")
    assert f"{outcome.repair.frames_changed} of {T} frames changed" in outcome.message or (
        "no mask changed" in outcome.message
    )
    assert outcome.mask_video == session.run.mask_video_path() and calls[-1] == ("masks", 1.0)
    assert session.mask_prompts == session.prompts(), "4D Generation sees no changed clicks"
    assert not session.run_lock.locked()


def test_repair_refuses_missing_masks_and_clicks(tiny, clip: Path, tmp_path: Path):
    cfg, models = tiny
    run = RunDir.create(tmp_path, cfg, input_path=clip)
    with pytest.raises(InputError, match="no finished masks to correct yet: run Mask Generation first"):
        repair(cfg, models, clip, run, 1, [CLICK])
    labels = np.zeros((T, H, W), np.uint8)
    labels[:, 30:60, 60:90] = 3
    run = imported_run(cfg, models, clip, labels, tmp_path / "masks", stop_after="masks")
    with pytest.raises(
        InputError, match="target 1 has no clicks: click on the frame where its mask is wrong"
    ):
        repair(cfg, models, clip, run, 1, [])
    before = shutil.copytree(run.path(RunDir.MASKS), tmp_path / "before")
    with pytest.raises(ValueError, match="outside the 96x64 frame"):
        repair(cfg, models, clip, run, 1, [Click(5, 200.0, 10.0, True)])
    assert all((before / p.name).read_bytes() == p.read_bytes() for p in run.path(RunDir.MASKS).iterdir())
    assert run.manifest["stages"]["masks"]["repairs"] == []


def test_masks_agree_on_iou_or_when_both_are_empty() -> None:
    a = np.zeros((4, 4), bool)
    assert masks_agree(a, a, 0.9)
    b = a.copy()
    b[:2] = True
    c = b.copy()
    c[2, 0] = True
    assert not masks_agree(a, b, 0.9) and masks_agree(b, c, 0.8) and not masks_agree(b, c, 0.9)


def test_cli_repairs_a_resumed_run_and_redoes_only_the_changed_people(
    tiny_ckpt_root: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from body4d.cli import main

    labels = np.zeros((T, H, W), np.uint8)
    labels[:, 30:60, 60:90] = 3
    folder = tmp_path / "masks"
    folder.mkdir()
    for t in range(T):
        (folder / f"{t:05d}.png").write_bytes(encode_palette_png(labels[t]))
    common = ["--output_dir", str(tmp_path / "out"), "--set", f"paths.ckpt_root={tiny_ckpt_root}"]
    common += ["--set", "runtime.device=cpu"]
    assert main(["run", "--input_video", str(clip), "--masks", str(folder), *common]) == 0
    run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    fix = tmp_path / "fix.json"
    fix.write_text(json.dumps({"4": [{"frame": 6, "x": 80, "y": 6}]}))
    assert main(["run", "--input_video", str(clip), "--resume", run_id, "--repair", "4", *common]) == 2
    assert "--repair needs --resume RUN_ID and --prompts FILE" in capsys.readouterr().err
    args = ["run", "--input_video", str(clip), "--resume", run_id, "--repair", "4", "--prompts", str(fix)]
    assert main([*args, *common]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["obj_ids"] == [3, 4] and summary["stages"] == list(STAGES)
    stages = json.loads((tmp_path / "out" / run_id / "manifest.json").read_text())["stages"]
    assert stages["masks"]["repairs"][0]["target"] == 4 and stages["recover"]["incremental"]
    assert stages["smooth"]["people_smoothed"] == sorted(
        int(k) for k in stages["masks"]["repairs"][0]["changed"]
    )
