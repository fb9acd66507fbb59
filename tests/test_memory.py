"""The GPU memory plan: the pure decision, the weighing, and moving the real tiny completion networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from body4d import memory
from body4d.config import load_config
from body4d.memory import AMODAL, BODY, CONTENT, DEPTH, GB, OFFLOADABLE, SAM3, Placement, plan_memory

SIZES = {SAM3: 3 * GB, BODY: 3 * GB, DEPTH: GB, AMODAL: 4 * GB, CONTENT: 4 * GB}  # 15 GB, 9 offloadable
MARGIN = 6 * GB


def _plan(
    setting: str = "auto", device: str = "cuda:0", total: int | None = 24 * GB, free: int | None = None, **kw
):
    sizes = kw.pop("sizes", SIZES)
    free = total - 6 * GB if free is None and total is not None else free
    return plan_memory(
        sizes,
        OFFLOADABLE,
        setting=setting,
        device=device,
        total_bytes=total,
        free_bytes=free,
        margin_bytes=MARGIN,
    )


# ------------------------------------------------------------------------------ the decision
def test_auto_keeps_everything_resident_when_it_fits() -> None:
    plan = _plan(total=24 * GB)  # 15 + 6 <= 24, and 9 + 6 <= 18 free
    assert plan.offload is False and plan.mode == "resident"
    assert plan.offloadable == OFFLOADABLE and plan.margin_bytes == MARGIN
    assert "15.0 GB of networks + 6.0 GB margin fit in 24.0 GB, 18.0 GB free" in plan.describe()


def test_auto_offloads_the_completion_networks_when_they_do_not_fit() -> None:
    plan = _plan(total=16 * GB)  # a T4: 15 + 6 > 16
    assert plan.offload is True and plan.mode == "offload"
    assert "do not fit in 16.0 GB" in plan.reason and "(9.0 GB) wait on the CPU" in plan.reason


def test_auto_offloads_when_the_free_memory_is_short() -> None:
    # The total would do, but another process holds memory: 9 + 6 GB > 12 GB free.
    assert _plan(total=24 * GB, free=12 * GB).offload is True
    assert _plan(total=24 * GB, free=15 * GB).offload is False  # exactly enough


def test_never_and_always_override_the_sizes() -> None:
    assert _plan("never", total=16 * GB).offload is False
    assert _plan("always", total=80 * GB).offload is True
    assert (
        "as configured" in _plan("always").reason and "runtime.offload=always" in _plan("always").describe()
    )


def test_nothing_moves_on_a_cpu_or_without_completion_networks() -> None:
    cpu = _plan("always", device="cpu", total=None, free=None)
    assert cpu.offload is False and "CPU" in cpu.reason
    none = _plan("always", sizes={SAM3: 3 * GB, BODY: 3 * GB}, total=8 * GB)
    assert none.offload is False and none.offloadable == () and "no completion network" in none.reason


def test_unknown_device_memory_keeps_everything_resident_unless_always() -> None:
    assert _plan(device="mps", total=None, free=None).offload is False
    assert _plan("always", device="mps", total=None, free=None).offload is True


def test_bad_setting_or_size_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime.offload='sometimes' is not one of auto, never, always"):
        _plan("sometimes")
    with pytest.raises(ValueError, match="negative"):
        _plan(sizes={SAM3: -1})


def test_config_reads_offload_and_refuses_bad_values() -> None:
    from body4d.config import ConfigError

    cfg = load_config()
    assert cfg.runtime.offload == "auto" and cfg.runtime.offload_margin_gb == 6.0
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["runtime.offload=sometimes", "runtime.offload_margin_gb=-1"])
    text = str(err.value)
    assert "runtime.offload" in text and "runtime.offload_margin_gb" in text


def test_load_device_is_the_cpu_whenever_the_plan_may_keep_them_there() -> None:
    cuda = torch.device("cuda", 0)
    assert memory.load_device("auto", cuda) == torch.device("cpu")
    assert memory.load_device("always", cuda) == torch.device("cpu")
    assert memory.load_device("never", cuda) == cuda
    assert memory.load_device("always", torch.device("cpu")) == torch.device("cpu")


# ------------------------------------------------------------------------------ weighing
def test_module_bytes_counts_parameters_and_buffers_at_their_dtype_shared_storage_once() -> None:
    linear = torch.nn.Linear(10, 10)  # 110 fp32 numbers
    assert memory.module_bytes([linear]) == 440
    assert memory.module_bytes([linear.to(torch.bfloat16)]) == 220
    norm = torch.nn.BatchNorm1d(4)  # weight, bias + running mean, var (fp32) + num_batches_tracked (int64)
    assert memory.module_bytes([norm]) == 4 * 4 * 4 + 8
    tied = torch.nn.Linear(10, 10, bias=False)
    other = torch.nn.Linear(10, 10, bias=False)
    other.weight = tied.weight
    assert memory.module_bytes([tied, other]) == 400
    assert memory.module_device([linear]) == "cpu" and memory.module_device([torch.nn.ReLU()]) == "none"


# ------------------------------------------------------------------------------ moving
@pytest.fixture(scope="module")
def completion_models(tiny_ckpt_root: Path):
    """The tiny completion networks loaded by the production loader (CPU, fp32)."""
    from body4d.driver import load_models

    cfg = load_config(overrides=[f"paths.ckpt_root={tiny_ckpt_root}", "runtime.device=cpu"])
    return load_models(cfg, sam3=False, detector=False, body=False, camera=False, completion=True)


def test_loading_on_a_cpu_places_everything_resident(completion_models) -> None:
    placement = completion_models.placement
    assert placement.plan.mode == "resident" and placement.plan.device == "cpu"
    assert set(placement.plan.model_bytes) == set(OFFLOADABLE)
    assert all(b > 0 for b in placement.plan.model_bytes.values())
    c = completion_models.completion
    assert list(placement.movable) == [c.depth, c.amodal, c.content]
    with memory.for_stage(completion_models, "completion") as placed:
        assert placed == {"memory_plan": "resident"} and placement.users == 0  # nothing moved
    with memory.for_stage(completion_models, "body") as placed:
        assert placed == {}


def _spy_moves(placement: Placement, monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> list:
    """Record every ``to(device)`` of the placement's networks (then really move them) and every
    CUDA cache release."""
    calls: list = []
    for model in placement.movable:
        real = model.to

        def spy(device, real=real, model=model):  # noqa: ANN001, ANN202
            calls.append((type(model).__name__, str(device)))
            if fail_on is not None and str(device) == fail_on and len(calls) == 2:
                raise torch.OutOfMemoryError("no room")
            return real(device)

        monkeypatch.setattr(model, "to", spy)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache", "")))
    return calls


def _params_on(models, device: str) -> bool:  # noqa: ANN001
    mods = memory.networks(models)
    return all(p.device.type == device for name in OFFLOADABLE for m in mods[name] for p in m.parameters())


def test_offloading_moves_every_completion_network_once_and_back(
    completion_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan("always")
    placement = Placement(plan, memory.offloadable(completion_models), "cpu:0", "cpu")
    monkeypatch.setattr(completion_models, "placement", placement)
    calls = _spy_moves(placement, monkeypatch)
    names = ["DepthEstimator", "VASModel", "VASModel"]

    with memory.for_stage(completion_models, "completion") as placed:
        assert placed == {"memory_plan": "offload"} and placement.users == 1
        assert calls == [(n, "cpu:0") for n in names]
        with placement.on_device():  # a nested (or concurrent) user shares the move
            assert placement.users == 2
        assert placement.users == 1 and len(calls) == 3
        assert _params_on(completion_models, "cpu")
    assert placement.users == 0
    assert calls[3:] == [*((n, "cpu") for n in names), ("empty_cache", "")]
    c = completion_models.completion
    assert c.depth.device == c.amodal.device == c.content.device == torch.device("cpu")
    assert _params_on(completion_models, "cpu")


def test_a_failing_move_sends_the_networks_home(completion_models, monkeypatch: pytest.MonkeyPatch) -> None:
    placement = Placement(_plan("always"), memory.offloadable(completion_models), "cpu:0", "cpu")
    calls = _spy_moves(placement, monkeypatch, fail_on="cpu:0")
    with pytest.raises(torch.OutOfMemoryError), placement.on_device():
        pass
    assert calls[:2] == [("DepthEstimator", "cpu:0"), ("VASModel", "cpu:0")]
    assert calls[2:] == [
        ("DepthEstimator", "cpu"),
        ("VASModel", "cpu"),
        ("VASModel", "cpu"),
        ("empty_cache", ""),
    ]
    assert placement.users == 0


def test_a_failing_stage_still_sends_the_networks_home(
    completion_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    placement = Placement(_plan("always"), memory.offloadable(completion_models), "cpu:0", "cpu")
    calls = _spy_moves(placement, monkeypatch)
    with pytest.raises(RuntimeError, match="stage failed"), placement.on_device():
        raise RuntimeError("stage failed")
    assert calls[-1] == ("empty_cache", "") and placement.users == 0
    assert _params_on(completion_models, "cpu")


def test_a_resident_plan_never_moves(completion_models, monkeypatch: pytest.MonkeyPatch) -> None:
    placement = Placement(_plan("never"), memory.offloadable(completion_models), "cpu:0", "cpu")
    calls = _spy_moves(placement, monkeypatch)
    with placement.on_device():
        assert placement.users == 0
    assert calls == []


# ------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_networks_really_move_to_the_gpu_and_back(tiny_ckpt_root: Path) -> None:
    from body4d.driver import load_models

    cfg = load_config(
        overrides=[f"paths.ckpt_root={tiny_ckpt_root}", "runtime.device=cuda", "runtime.offload=always"]
    )
    models = load_models(cfg, sam3=False, detector=False, body=False, camera=False, completion=True)
    placement = models.placement
    assert placement.plan.offload and _params_on(models, "cpu")
    before = torch.cuda.memory_allocated()
    with memory.for_stage(models, "completion"):
        assert _params_on(models, "cuda") and models.completion.amodal.device.type == "cuda"
        assert torch.cuda.memory_allocated() - before >= sum(placement.plan.model_bytes.values())
    assert _params_on(models, "cpu") and models.completion.depth.device.type == "cpu"
    assert torch.cuda.memory_allocated() <= before

    resident = load_models(
        cfg.replace(**{"runtime.offload": "auto"}),
        sam3=False,
        detector=False,
        body=False,
        camera=False,
        completion=True,
    )
    assert resident.placement.plan.mode == "resident" and _params_on(resident, "cuda")
