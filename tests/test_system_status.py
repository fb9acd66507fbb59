"""The app's system panel with every tiny network loaded on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from body4d import memory
from body4d.config import load_config
from body4d.ui.system import (
    NO_GPU,
    NOT_LOADED,
    RENDERER_NUMPY,
    RENDERER_SOFTWARE,
    Platform,
    probe_platform,
    renderer_kind,
    system_status,
)

ALL = (memory.SAM3, memory.BODY, memory.MOGE, *memory.OFFLOADABLE)


@pytest.fixture(scope="module")
def cfg(tiny_ckpt_root: Path):
    return load_config(
        overrides=[f"paths.ckpt_root={tiny_ckpt_root}", "runtime.device=cpu", "completion.enable=true"]
    )


@pytest.fixture(scope="module")
def all_models(cfg):
    """Every tiny network, loaded by the production loader (CPU, fp32)."""
    from body4d.driver import load_models

    return load_models(cfg)


def test_renderer_kind_names_gpu_llvmpipe_and_numpy() -> None:
    assert renderer_kind("egl", "NVIDIA A10G/PCIe/SSE2") == "GPU (NVIDIA A10G/PCIe/SSE2)"
    assert renderer_kind("egl", "llvmpipe (LLVM 15.0.6, 256 bits)") == RENDERER_SOFTWARE
    assert renderer_kind("software", "software rasteriser (numpy 2.2.6)") == RENDERER_NUMPY


def test_probe_platform_describes_device_precision_and_the_renderer_in_use(
    cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BODY4D_RENDERER", "software")
    assert probe_platform(cfg) == Platform("cpu", "float32", RENDERER_NUMPY)
    monkeypatch.setenv("BODY4D_RENDERER", "vulkan")
    assert probe_platform(cfg).renderer.startswith("unavailable: ")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA
    bad = probe_platform(cfg.replace(**{"runtime.device": "cuda"}))
    assert bad.device.startswith("unusable: ") and bad.dtype == "bf16"


def test_status_lists_every_loaded_network_with_its_device_and_size(all_models) -> None:
    status = system_status(Platform("cpu", "float32", RENDERER_SOFTWARE), all_models)
    assert (status.device, status.dtype, status.renderer) == ("cpu", "float32", RENDERER_SOFTWARE)
    assert tuple(m.name for m in status.models) == ALL
    sizes = {m.name: m.bytes for m in status.models}
    assert all(m.device == "cpu" for m in status.models)
    # Tiny networks weigh kilobytes to a few megabytes; each is weighed from its own tensors.
    assert all(0 < b < 200 * memory.MB for b in sizes.values()), sizes
    assert sizes == all_models.placement.plan.model_bytes
    depth = all_models.completion.depth.model
    assert sizes[memory.DEPTH] == sum(
        t.numel() * t.element_size() for t in (*depth.parameters(), *depth.buffers())
    )
    # SAM-3's tracker and detector share their backbone: counted once.
    sam3 = all_models.sam3
    apart = memory.module_bytes([sam3.tracker]) + memory.module_bytes([sam3.detector])
    assert memory.module_bytes([sam3.tracker]) < sizes[memory.SAM3] < apart
    assert status.gpu_memory == NO_GPU
    assert status.memory_plan.startswith("resident (runtime.offload=auto): the networks run on the CPU")


def test_markdown_shows_each_field_in_a_few_lines(all_models) -> None:
    status = system_status(Platform("cpu", "float32", RENDERER_NUMPY), all_models)
    text = status.markdown()
    assert len(text.splitlines()) == 4
    assert "**Device** cpu, float32" in text and RENDERER_NUMPY in text
    for m in status.models:
        assert m.text() in text and m.text().startswith(f"{m.name} on cpu, ")
        assert m.text().endswith(" MB")
    assert f"**GPU memory** {NO_GPU}" in text and status.memory_plan in text


def test_status_without_models() -> None:
    status = system_status(Platform("cpu", "float32", RENDERER_NUMPY), None)
    assert status.models == () and status.memory_plan == NOT_LOADED
    assert f"**Models** {NOT_LOADED}" in status.markdown()
