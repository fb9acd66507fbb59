"""Out of GPU memory in a batched stage: the batch is retried at half the size, down to 1.

The fault is injected on CPU: the real network call raises the real ``torch.OutOfMemoryError``
for batches above a size, as CUDA's allocator does when a batch does not fit.
"""

from __future__ import annotations

import json
import logging
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from body4d.cli import main
from body4d.jobs import Job
from body4d.memory import HalvingBatch
from body4d.stages.recover import FrameInput, recover_bodies
from body4d.types import Intrinsics
from body4d.video import encode_video
from models.sam_3d_body import SAM3DBody
from tests.conftest import tiny_cpu_args, two_people_frames

T, H, W = 6, 64, 96
FITS = 2  # the largest batch the injected fault lets through


def _oom_above(limit: int, call):  # noqa: ANN001, ANN202 - wraps any batched call
    """``call`` raising CUDA's out-of-memory error for batches of more than ``limit`` items."""
    sizes: list[int] = []

    def wrapped(items, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        sizes.append(len(items))
        if len(items) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(items)}.00 GiB")
        return call(items, *args, **kwargs)

    wrapped.sizes = sizes  # type: ignore[attr-defined]
    return wrapped


def test_halving_batch_halves_until_it_fits_and_stays(caplog: pytest.LogCaptureFixture) -> None:
    layer = torch.nn.Linear(4, 3)
    items = [torch.randn(4, generator=torch.Generator().manual_seed(i)) for i in range(11)]

    def forward(batch, size):  # noqa: ANN001, ANN202
        assert len(batch) <= size
        with torch.no_grad():
            return list(layer(torch.stack(list(batch))))

    unbatched = [forward([x], 1)[0] for x in items]
    call = _oom_above(FITS, forward)
    job = Job("recover")
    with caplog.at_level(logging.WARNING, logger="body4d.memory"):
        out = HalvingBatch(8, "batch_size", job).map(call, items)
    assert len(out) == len(items)
    for got, want in zip(out, unbatched, strict=True):
        torch.testing.assert_close(got, want)
    assert call.sizes == [8, 4, 2, 2, 2, 2, 2, 1]  # 8 and 4 fail once each; then 2 until the end
    assert job.notes == {"batch_size_configured": 8, "batch_size": 2}
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory with batch_size=8 (CUDA out of memory. Tried to allocate 8.00 GiB): retrying with 4",
        "out of memory with batch_size=4 (CUDA out of memory. Tried to allocate 4.00 GiB): retrying with 2",
    ]


def test_halving_batch_gives_up_below_one() -> None:
    job = Job("recover")
    call = _oom_above(0, lambda batch, _size: list(batch))
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 1.00 GiB"):
        HalvingBatch(3, "batch_size", job).map(call, [1, 2, 3])
    assert call.sizes == [3, 1] and job.notes["batch_size"] == 1
    with pytest.raises(ValueError, match="at least 1"):
        HalvingBatch(0, "batch_size")


def _frames() -> list[FrameInput]:
    rng = np.random.default_rng(5)
    frames = []
    for t in range(T):
        labels = np.zeros((H, W), np.uint8)
        labels[8:50, 4 + t : 30 + t] = 1
        labels[20:60, 55:85] = 2
        frames.append(FrameInput(t, rng.integers(0, 255, (H, W, 3), dtype=np.uint8), labels))
    return frames


@pytest.mark.parametrize("queue_depth", [0, 3])
def test_recover_after_out_of_memory_matches_an_unbatched_run(
    port: SAM3DBody, monkeypatch: pytest.MonkeyPatch, queue_depth: int
) -> None:
    """Also with the crops cut in a thread ahead of the network (``queue_depth``), which reads
    the batch size as it halves."""
    K = np.array([[100.0, 0, W / 2], [0, 100.0, H / 2], [0, 0, 1]])
    camera = Intrinsics(K=K, width=W, height=H)
    options = {"inference_type": "body"}
    unbatched = recover_bodies(_frames(), T, camera, port, batch_size=1, **options)
    predict = _oom_above(FITS, port.predict)
    monkeypatch.setattr(port, "predict", predict)
    real_crops, cut_in = port._crops, set()  # what prepare and predict cut crops with

    def crops(items):  # noqa: ANN001, ANN202
        cut_in.add(threading.current_thread() is threading.main_thread())
        return real_crops(items)

    monkeypatch.setattr(port, "_crops", crops)
    job = Job("recover")
    halved = recover_bodies(
        _frames(), T, camera, port, batch_size=8, job=job, queue_depth=queue_depth, **options
    )
    # Without a queue every crop is cut in the main thread; with one, the thread cuts them (the
    # main thread only re-cuts the parts of a batch that ran out of memory).
    assert (False in cut_in) == (queue_depth > 0) and True in cut_in
    assert max(predict.sizes) == 8 and 4 in predict.sizes
    assert job.notes == {"batch_size_configured": 8, "batch_size": FITS}
    assert sorted(halved) == sorted(unbatched) == [1, 2]
    for obj_id, track in unbatched.items():
        for name, want in track.arrays().items():
            np.testing.assert_allclose(
                getattr(halved[obj_id], name), want, rtol=1e-5, atol=1e-5, err_msg=name
            )


def test_run_records_the_batch_size_used_in_the_manifest(
    tiny_ckpt_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = two_people_frames(T, H, W)
    clip = encode_video(frames, tmp_path / "clip.mp4", Fraction(25))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps({"1": [{"frame": 0, "x": 15, "y": 25}], "2": [{"frame": 0, "x": 75, "y": 45}]})
    )
    real_predict = SAM3DBody.predict
    predict = _oom_above(FITS, lambda items, model, **kwargs: real_predict(model, items, **kwargs))
    monkeypatch.setattr(SAM3DBody, "predict", lambda model, items, **kwargs: predict(items, model, **kwargs))
    code = main(
        [
            "run",
            "--input_video",
            str(clip),
            "--prompts",
            str(prompts),
            "--output_dir",
            str(tmp_path / "out"),
            "--stop-after",
            "recover",
            *tiny_cpu_args(tiny_ckpt_root),
            "--set",
            "sam_3d_body.batch_size=8",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    root = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    recover = json.loads((root / "manifest.json").read_text())["stages"]["recover"]
    assert recover["status"] == "done"
    assert recover["batch_size"] == FITS and recover["batch_size_configured"] == 8
    assert predict.sizes[0] > FITS and max(predict.sizes[2:]) == FITS  # failed at 8 and 4, then fitted
    assert recover["person_frames_estimated"] == sum(predict.sizes[2:])
