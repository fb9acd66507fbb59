"""Device->host transfers of the SAM-3D-Body predictor: one per network chunk, never one per person.

On a GPU every host copy waits for the device, so ``predict`` gathers a whole chunk's outputs
into one tensor and copies it once. This machine has no GPU, so the tests count *calls* of the
Tensor methods that copy to the host rather than actual copies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from models.sam_3d_body import BodyItem, SAM3DBody

# Tensor methods that copy device data to the host (or sync on it to return a Python value).
HOST_METHODS = (
    "cpu",
    "numpy",
    "tolist",
    "item",
    "__array__",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
)
TO_DEVICE = "to(device)"  # `.to(<torch.device>)`: moves to the model device here, counted apart


@contextmanager
def count_host_transfers() -> Iterator[Counter[str]]:
    """Count calls of the host-copying Tensor methods made inside the block, by method name.

    A call made inside another counted call (``__array__`` calling ``numpy``) counts once.
    ``.to(...)`` counts as "to('cpu')" when its target is the string "cpu"; a ``torch.device``
    target is counted as `TO_DEVICE`, because on this CPU-only machine the model device is the
    CPU too and those calls are the moves of constants onto it (host->device on a GPU).
    """
    counts: Counter[str] = Counter()
    depth = 0

    def counted(original: Any, key: Callable[[tuple[Any, ...], dict[str, Any]], str | None]) -> Any:
        """``original`` wrapped to count its outermost calls under ``key(args, kwargs)`` (None: not counted)."""

        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            name = key(args, kwargs)
            if depth == 0 and name is not None:
                counts[name] += 1
            depth += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth -= 1

        return method

    def to_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, str) and torch.device(target).type == "cpu":
            return "to('cpu')"
        return TO_DEVICE if isinstance(target, torch.device) else None

    with pytest.MonkeyPatch.context() as mp:
        for name in HOST_METHODS:
            mp.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name), lambda a, k, n=name: n))
        mp.setattr(torch.Tensor, "to", counted(torch.Tensor.to, to_key))
        yield counts


def host_copies(counts: Counter[str]) -> dict[str, int]:
    """The counts without the moves onto the model device."""
    return {k: v for k, v in counts.items() if k != TO_DEVICE}


def _items(n: int) -> list[BodyItem]:
    """n people spread over two images, with a mask and explicit intrinsics on some."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (240, 300, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (200, 260, 3), dtype=np.uint8)
    K = np.array([[250.0, 0.0, 120.0], [0.0, 260.0, 110.0], [0.0, 0.0, 1.0]])
    mask = np.zeros(a.shape[:2], dtype=bool)
    mask[20:200, 40:190] = True
    people = [
        BodyItem(a, np.array([40.0, 20.0, 200.0, 240.0]), mask),
        BodyItem(b, np.array([10.0, 10.0, 120.0, 190.0]), None, K),
        BodyItem(a, np.array([100.0, 60.0, 250.0, 200.0])),
        BodyItem(b, np.array([30.0, 25.0, 200.0, 180.0]), None, K),
        BodyItem(a, np.array([5.0, 5.0, 100.0, 230.0])),
        BodyItem(a, np.array([150.0, 30.0, 290.0, 235.0])),
    ]
    return people[:n]


def test_counter_sees_host_copies() -> None:
    """The counter catches each way of reaching host data (else the tests below prove nothing)."""
    x = torch.arange(4.0)
    with count_host_transfers() as counts:
        x.cpu().numpy()
        np.asarray(x)
        [float(v) for v in x[:2]]
        x.to("cpu")
        x.to(x.device)
        x.to(torch.float64)
    assert counts == {"cpu": 1, "numpy": 1, "__array__": 1, "__float__": 2, "to('cpu')": 1, TO_DEVICE: 1}


# Per chunk: "body" copies its results once; "full" also copies the hand boxes once, because
# the hand crops are cut from the host images. Each copy is one `.cpu()` + one `.numpy()`.
PER_CHUNK = {"body": 1, "full": 2}


@pytest.mark.parametrize("mode", ["body", "full"])
def test_predict_copies_to_host_once_per_chunk(port: SAM3DBody, mode: str) -> None:
    counts = {}
    for n in (1, 6):
        with count_host_transfers() as counts[n]:
            out = port.predict(_items(n), inference_type=mode)
        assert len(out) == n
    assert counts[1] == counts[6]  # moves onto the device included: nothing grows with N
    k = PER_CHUNK[mode]
    assert host_copies(counts[6]) == {"cpu": k, "numpy": k}
    with count_host_transfers() as chunked:
        port.predict(_items(6), inference_type=mode, batch_size=3)
    assert host_copies(chunked) == {"cpu": 2 * k, "numpy": 2 * k}


def test_mesh_from_params_copies_to_host_once(port: SAM3DBody) -> None:
    est = port.predict(_items(5), inference_type="body")
    params = [
        np.stack([getattr(e, f) for e in est])
        for f in ("global_rot", "body_pose", "hand_pose", "shape", "scale", "expression")
    ]
    for n in (1, 5):
        with count_host_transfers() as counts:
            verts, kps = port.mesh_from_params(*(p[:n] for p in params))
        assert host_copies(counts) == {"cpu": 1, "numpy": 1}
        assert verts.shape == (n, 18439, 3) and kps.shape == (n, 70, 3)
        assert verts.flags.c_contiguous and kps.flags.c_contiguous
