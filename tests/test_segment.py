"""body4d.stages.segment with the tiny SAM-3 checkpoint (real adapter and loading code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from body4d.config import Sam3Config
from body4d.jobs import Cancelled, Job
from body4d.stages.segment import (
    apply_prompts,
    mask_iou,
    segment_video,
    select_new_detections,
)
from body4d.types import Click, Prompts
from models.frames import ArrayFrames, PromptError
from models.sam3 import Detections, Sam3Models

T, H, W = 20, 64, 80


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def video(n: int = T) -> ArrayFrames:
    frames = np.full((n, H, W, 3), 128, np.uint8)
    for t in range(n):
        frames[t, 5:30, 2 + t : 20 + t] = (220, 40, 40)
        frames[t, 35:60, 50:70] = (40, 80, 230)
    return ArrayFrames(frames)


def detections(*masks: np.ndarray) -> Detections:
    n = len(masks)
    return Detections(
        scores=np.linspace(0.9, 0.8, n, dtype=np.float32),
        boxes=np.zeros((n, 4), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, H, W), bool),
    )


class Recorder:
    """A job that records every progress report ``"<phase> frame <i>"`` (and can cancel)."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.events: list[tuple[float, str, int]] = []
        self.job = Job(
            "masks", self._report, lambda: cancel_after is not None and len(self.events) >= cancel_after
        )

    def _report(self, _stage: str, fraction: float, message: str) -> None:
        phase, _, frame = message.split()
        self.events.append((fraction, phase, int(frame)))

    def frames(self, phase: str) -> list[int]:
        return [frame for _, p, frame in self.events if p == phase]


def segment(session, job: Job | None = None, **kwargs):  # noqa: ANN001, ANN201 - test shorthand
    """`segment_video` with prompts only unless a detector is given."""
    kwargs = {"detect": None, "redetect_every": 0, "redetect_iou": 0.3, **kwargs}
    return segment_video(session, job=job, **kwargs)


def test_three_targets_cover_every_frame_in_both_directions(models: Sam3Models) -> None:
    session = models.open_session(video())
    prompts = Prompts(
        {
            1: (Click(8, 15, 15, True),),
            2: (Click(8, 60, 45, True), Click(8, 5, 60, False)),
            3: (Click(8, 40, 10, True),),
        }
    )
    apply_prompts(session, prompts)
    rec = Recorder()
    result = segment(session, rec.job)

    track = result.track
    assert track.obj_ids == (1, 2, 3)
    assert track.labels.shape == (T, H, W) and track.labels.dtype == np.uint8
    assert set(np.unique(track.labels)) <= {0, 1, 2, 3}
    assert result.first_frames == {1: 8, 2: 8, 3: 8}
    assert result.areas.shape == (T, 3)
    assert (result.areas > 0).all(), "every target has a mask on every frame"
    assert rec.frames("forward") == list(range(8, T))
    assert rec.frames("backward") == list(range(7, -1, -1))
    assert rec.events[-1][0] == 1.0 and len(rec.events) == T
    assert (track.labels[0] > 0).any() and (track.labels[T - 1] > 0).any()


def test_targets_first_prompted_on_different_frames(models: Sam3Models) -> None:
    session = models.open_session(video())
    session.add_points(1, 0, [Click(0, 10, 10, True)])
    session.add_points(2, 12, [Click(12, 60, 45, True)])
    rec = Recorder()
    result = segment(session, rec.job)
    assert result.first_frames == {1: 0, 2: 12}
    assert (result.areas > 0).all()
    assert rec.frames("forward") == list(range(T))
    assert rec.frames("backward") == list(range(11, -1, -1))  # only target 2 goes back
    assert rec.events[-1][0] == 1.0 and len(rec.events) == T + 12


def test_lost_target_is_empty_there_and_ids_are_kept(sam3_section: Sam3Config) -> None:
    lossy = Sam3Models.load(sam3_section, "cpu", torch.float32, with_detector=False)
    with torch.no_grad():  # the tracker now never believes the object is present on tracked frames
        lossy.tracker.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-20.0)
    session = lossy.open_session(video(10))
    session.add_mask(3, 0, rect(5, 30, 2, 20))
    session.add_mask(7, 5, rect(35, 60, 50, 70))
    result = segment(session)
    assert result.track.obj_ids == (3, 7)
    present = {oid: [int(f) for f in np.flatnonzero(result.areas[:, i])] for i, oid in enumerate((3, 7))}
    assert present == {3: [0], 7: [5]}
    assert set(np.unique(result.track.labels[0])) == {0, 3}
    assert set(np.unique(result.track.labels[5])) == {0, 7}
    assert set(np.unique(result.track.labels[2])) == {0}


def test_propagation_without_targets_is_refused(models: Sam3Models) -> None:
    with pytest.raises(PromptError, match="no targets to segment"):
        segment(models.open_session(video()))


def test_bad_prompts_are_refused_before_tracking(models: Sam3Models) -> None:
    session = models.open_session(video())
    with pytest.raises(PromptError, match="outside the 80x64 frame"):
        apply_prompts(session, Prompts({1: (Click(0, 80, 10, True),)}))
    with pytest.raises(PromptError, match="only negative clicks"):
        apply_prompts(session, Prompts({2: (Click(0, 10, 10, False),)}))
    with pytest.raises(PromptError, match="outside the video"):
        apply_prompts(session, Prompts({3: (Click(T, 10, 10, True),)}))


def test_cancel_stops_the_stage(models: Sam3Models) -> None:
    session = models.open_session(video())
    session.add_points(1, 0, [Click(0, 10, 10, True)])
    rec = Recorder(cancel_after=3)
    with pytest.raises(Cancelled, match="masks cancelled"):
        segment(session, rec.job)
    assert len(rec.events) == 3


def test_automatic_people_from_the_tiny_detector(models: Sam3Models) -> None:
    frames = video()
    detect = models.detect  # the "person" prompt and threshold 0.5 of the sam3 section
    expected = [m for m in detect(frames.frame(0)).masks if m.any()]
    assert expected, "the biased tiny detector must fire"
    session = models.open_session(frames)
    result = segment(session, detect=detect)
    ids = tuple(range(1, len(expected) + 1))
    assert result.track.obj_ids == ids
    assert result.first_frames == dict.fromkeys(ids, 0)
    assert (result.areas > 0).all()
    assert session.obj_ids == list(ids)


def test_late_person_gets_a_new_id_and_is_tracked_back(models: Sam3Models) -> None:
    person_b, person_c = rect(5, 30, 10, 30), rect(40, 60, 60, 78)
    everywhere = np.ones((H, W), bool)  # overlaps any target of the random tracker (IoU = its area)
    calls: list[int] = []

    def scripted(frame: np.ndarray) -> Detections:
        """Test double of Sam3Models.detect keyed by frame brightness marker in pixel (0, 0)."""
        index = int(frame[0, 0, 0])
        calls.append(index)
        if index == 8:
            return detections(person_b)
        if index == 16:
            return detections(everywhere, person_c)
        return detections()

    frames = video(24).frame
    marked = np.stack([frames(i) for i in range(24)])
    marked[:, 0, 0, 0] = np.arange(24)
    session = models.open_session(ArrayFrames(marked))
    rec = Recorder()
    result = segment(session, rec.job, detect=scripted, redetect_every=8)

    assert calls == [0, 8, 16], "empty first frame, then re-detection every 8 frames"
    assert result.track.obj_ids == (1, 2), "the full-frame detection matched target 1, person C is new"
    assert result.first_frames == {1: 8, 2: 16}
    assert result.areas[16, 0] / (H * W) > 0.3, "precondition: target 1 overlaps the full-frame detection"
    assert (result.areas > 0).all(), "late arrivals are tracked back to frame 0"
    assert rec.frames("backward") == list(range(7, -1, -1)) + list(range(15, -1, -1))
    assert rec.events[-1][0] == 1.0 and len(rec.events) == 24 + 8 + 16


def test_nobody_detected_is_an_error(models: Sam3Models) -> None:
    session = models.open_session(video(6))
    with pytest.raises(PromptError, match="nobody was detected"):
        segment(session, detect=lambda frame: detections(), redetect_every=2)


def test_select_new_detections_uses_mask_iou_greedily() -> None:
    tracked = {1: rect(0, 20, 0, 20)}
    same = rect(0, 20, 2, 20)  # IoU 0.9 with target 1
    new_a = rect(30, 60, 30, 60)
    dup_a = rect(32, 60, 30, 60)  # overlaps new_a: keep only the better-scoring one
    empty = np.zeros((H, W), bool)
    found = detections(same, new_a, dup_a, empty, rect(0, 20, 15, 40))
    assert mask_iou(same, tracked[1]) == pytest.approx(0.9)
    assert select_new_detections(found, tracked, iou_threshold=0.3) == [1, 4]
    assert select_new_detections(found, tracked, iou_threshold=0.95) == [0, 1, 2, 4]  # 0.93 < 0.95
    assert select_new_detections(found, {}, iou_threshold=0.3) == [0, 1, 4]


def test_negative_only_refinement_on_an_earlier_frame_keeps_the_positive_prompt(models: Sam3Models) -> None:
    session = models.open_session(video(10))
    apply_prompts(session, Prompts({5: (Click(6, 10, 10, True), Click(2, 70, 50, False))}))
    assert session.prompt_frames(5) == [2, 6] and session.first_prompt_frame(5) == 2
    rec = Recorder()
    result = segment(session, rec.job)
    assert result.first_frames == {5: 2}
    assert rec.frames("forward") == list(range(2, 10))
    assert rec.frames("backward") == [1, 0]
    assert result.areas.shape == (10, 1) and (result.areas[6:] > 0).all()
