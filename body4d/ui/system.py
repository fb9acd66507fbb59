"""The app's system panel: device, precision, mesh renderer, networks in memory, GPU memory, plan.

Two parts, because probing OpenGL loads Mesa's LLVM, which must happen only after the models are
loaded (app.py says why): `probe_platform` runs once at start-up, after loading, and describes what
does not change (device, precision, renderer); `system_status` is cheap enough for every refresh (it
reads the networks' devices and the CUDA allocator's counters, nothing is moved or created).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from body4d.memory import format_bytes, module_bytes, module_device, networks

if TYPE_CHECKING:
    from body4d.config import Config
    from body4d.driver import PipelineModels

# Panel texts.
RENDERER_SOFTWARE = "software (llvmpipe)"
RENDERER_NUMPY = "numpy fallback"
NO_GPU = "no GPU"
NOT_LOADED = "not loaded"


@dataclass(frozen=True)
class Platform:
    """What does not change while the app runs (`probe_platform`).

    Attributes:
        device: the compute device (``runtime.device`` resolved), e.g. ``"cuda"`` or ``"cpu"``,
            or ``"unusable: <reason>"``.
        dtype: the network precision on it (``runtime.dtype`` resolved), e.g. ``"bfloat16"``.
        renderer: the mesh renderer (`renderer_kind`).
    """

    device: str
    dtype: str
    renderer: str


@dataclass(frozen=True)
class ResidentModel:
    """One loaded network: where it is and how much memory its weights take.

    Attributes:
        name: display name (``body4d.memory`` names, e.g. ``"SAM-3"``).
        device: where its weights are, e.g. ``"cuda:0"``.
        bytes: its parameters and buffers, bytes.
    """

    name: str
    device: str
    bytes: int

    def text(self) -> str:
        """``"SAM-3 on cuda:0, 3.4 GB"``."""
        return f"{self.name} on {self.device}, {format_bytes(self.bytes)}"


@dataclass(frozen=True)
class SystemStatus:
    """The system panel's content (`system_status`).

    Attributes:
        device: the compute device.
        dtype: the network precision.
        renderer: the mesh renderer.
        models: the loaded networks, in load order (empty when none is loaded).
        gpu_memory: ``"A allocated / R reserved / T total"`` of the CUDA device, or ``"no GPU"``.
        memory_plan: the GPU memory plan (`body4d.memory.MemoryPlan.describe`), or ``"not loaded"``.
    """

    device: str
    dtype: str
    renderer: str
    models: tuple[ResidentModel, ...]
    gpu_memory: str
    memory_plan: str

    def markdown(self) -> str:
        """The panel as a few Markdown lines."""
        models = " · ".join(m.text() for m in self.models) or NOT_LOADED
        return "  \n".join(
            (
                f"**Device** {self.device}, {self.dtype} · **Renderer** {self.renderer}",
                f"**Models** {models}",
                f"**GPU memory** {self.gpu_memory}",
                f"**Memory plan** {self.memory_plan}",
            )
        )


def renderer_kind(backend: str, info: str) -> str:
    """The mesh renderer in a few words.

    Args:
        backend: `body4d.render.MeshRenderer.backend`: ``"egl"`` or ``"software"``.
        info: its GL renderer string (`MeshRenderer.info`).

    Returns:
        ``"GPU (<GL renderer>)"``, ``"software (llvmpipe)"`` (Mesa draws on the CPU) or
        ``"numpy fallback"`` (EGL could not start; our rasteriser draws).
    """
    from body4d.render import LLVMPIPE

    if backend != "egl":
        return RENDERER_NUMPY
    return RENDERER_SOFTWARE if LLVMPIPE in info else f"GPU ({info})"


def probe_platform(cfg: Config) -> Platform:
    """Describe the device, precision and mesh renderer, once at start-up after the models are loaded.

    Starts the process's mesh renderer (`body4d.render.get_renderer`), the one the render stage uses.

    Args:
        cfg: the configuration (``runtime.device``, ``runtime.dtype``).
    """
    from body4d.render import get_renderer
    from models.devices import resolve_device, resolve_dtype

    try:
        resolved = resolve_device(cfg.runtime.device)
        device, dtype = str(resolved), str(resolve_dtype(cfg.runtime.dtype, resolved)).removeprefix("torch.")
    except ValueError as exc:
        device, dtype = f"unusable: {exc}", cfg.runtime.dtype
    try:
        renderer = get_renderer()
    except ValueError as exc:  # a bad BODY4D_RENDERER
        return Platform(device, dtype, f"unavailable: {exc}")
    return Platform(device, dtype, renderer_kind(renderer.backend, renderer.info()))


def gpu_memory(device: str) -> str:
    """``"A allocated / R reserved / T total"`` of a CUDA ``device`` (torch's allocator), else ``"no GPU"``."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return NO_GPU
    dev = torch.device(device)
    allocated = torch.cuda.memory_allocated(dev)
    reserved = torch.cuda.memory_reserved(dev)
    total = torch.cuda.get_device_properties(dev).total_memory
    return (
        f"{format_bytes(allocated)} allocated / {format_bytes(reserved)} reserved / "
        f"{format_bytes(total)} total"
    )


def system_status(platform: Platform, models: PipelineModels | None) -> SystemStatus:
    """The system panel now: cheap, for every refresh.

    Args:
        platform: `probe_platform`'s description, made once at start-up.
        models: the loaded networks, or None when they are not loaded.
    """
    loaded = networks(models) if models is not None else {}
    placement = models.placement if models is not None else None
    return SystemStatus(
        device=platform.device,
        dtype=platform.dtype,
        renderer=platform.renderer,
        models=tuple(ResidentModel(name, module_device(m), module_bytes(m)) for name, m in loaded.items()),
        gpu_memory=gpu_memory(platform.device),
        memory_plan=placement.plan.describe() if placement is not None else NOT_LOADED,
    )
