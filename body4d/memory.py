"""The GPU memory plan (``runtime.offload``): where the loaded networks live, and moving them.

Decided once by `place` when `body4d.driver.load_models` has loaded the networks:

* ``auto``: every loaded network is weighed (`network_bytes`: parameters and buffers at their
  dtype, shared tensors once). When all of them plus ``runtime.offload_margin_gb`` of working
  memory fit in the device's memory (`torch.cuda.mem_get_info`), every network stays resident.
  Otherwise the completion networks (Depth Anything V2 and both Diffusion-VAS pipelines: the
  largest, and used by one stage only) wait on the CPU and move to the device only while the
  ``complete`` stage runs (`for_stage`); afterwards they move back and the CUDA allocator's cache
  is emptied, so that the other stages get that memory back.
* ``never``: every network stays resident; ``always``: the completion networks wait on the CPU.

On a CPU nothing moves. The decision itself is the pure function `plan_memory`; the completion
networks are loaded on the CPU whenever the plan may keep them there (`load_device`), so loading
never needs room for them on the device.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from body4d.errors import one_line

if TYPE_CHECKING:
    import torch

    from body4d.config import RuntimeConfig
    from body4d.driver import PipelineModels
    from body4d.jobs import Job

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)

OFFLOAD_SETTINGS = ("auto", "never", "always")
RESIDENT, OFFLOAD = "resident", "offload"
# Display names of the networks (the app's status panel, the doctor, the plan's reasons).
SAM3, BODY, MOGE = "SAM-3", "SAM-3D-Body", "MoGe-2"
DEPTH, AMODAL, CONTENT = "Depth Anything V2", "Diffusion-VAS amodal", "Diffusion-VAS completion"
# The networks that may wait on the CPU between uses, and the `PipelineModels` field (the stage
# table's model name) that holds them.
OFFLOADABLE = (DEPTH, AMODAL, CONTENT)
OFFLOADED_FIELD = "completion"
# Where offloaded networks wait.
HOST = "cpu"
# Decimal units, as the config key offload_margin_gb and the status panel print them.
GB = 10**9
MB = 10**6


class Movable(Protocol):
    """A loaded network wrapper that moves its weights (`models.depth.DepthEstimator`,
    `models.diffusion_vas.VASModel`)."""

    def to(self, device: torch.device | str) -> Any: ...


@dataclass(frozen=True)
class MemoryPlan:
    """Where the networks live, as `plan_memory` decided.

    Attributes:
        setting: ``runtime.offload`` (auto, never, always).
        device: the compute device, e.g. ``"cuda:0"``.
        offload: the offloadable networks wait on the CPU and move to ``device`` for their stage.
        model_bytes: bytes of each loaded network, by name.
        offloadable: the names among them that move when offloading.
        total_bytes: the device's memory (None: unknown, not a CUDA device).
        free_bytes: its free memory when the plan was made, without the offloadable networks
            (None: unknown).
        margin_bytes: working memory the plan keeps free beside the networks.
        reason: why, in one sentence.
    """

    setting: str
    device: str
    offload: bool
    model_bytes: Mapping[str, int]
    offloadable: tuple[str, ...]
    total_bytes: int | None
    free_bytes: int | None
    margin_bytes: int
    reason: str

    @property
    def mode(self) -> str:
        """``"offload"`` or ``"resident"``."""
        return OFFLOAD if self.offload else RESIDENT

    def describe(self) -> str:
        """One line: the mode, the setting and the reason."""
        return f"{self.mode} (runtime.offload={self.setting}): {self.reason}"


def format_bytes(n: int | float) -> str:
    """``"812.4 MB"`` below a gigabyte, ``"3.4 GB"`` from there (decimal units)."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.1f} MB"


def plan_memory(
    model_bytes: Mapping[str, int],
    offloadable: Collection[str],
    *,
    setting: str,
    device: str,
    total_bytes: int | None,
    free_bytes: int | None,
    margin_bytes: int,
) -> MemoryPlan:
    """Decide where the networks live (module docstring); pure.

    Args:
        model_bytes: bytes of every loaded network, by name.
        offloadable: names of the networks that may wait on the CPU (the others stay resident).
        setting: ``runtime.offload``: auto, never or always.
        device: the compute device (``"cpu"``, ``"cuda:0"``, ``"mps"``).
        total_bytes: the device's memory; None when unknown (not CUDA).
        free_bytes: the device's free memory now, with the offloadable networks not on it (the
            others already are); None when unknown.
        margin_bytes: working memory to keep free beside the networks.

    Returns:
        The plan. ``offload`` is True with ``always``, and with ``auto`` when the networks plus
        the margin exceed the device's total memory or the offloadable ones plus the margin
        exceed its free memory; False on a CPU, when nothing offloadable is loaded, with
        ``never``, and with ``auto`` when everything fits or the device's memory is unknown.

    Raises:
        ValueError: an unknown setting or a negative size.
    """
    if setting not in OFFLOAD_SETTINGS:
        raise ValueError(f"runtime.offload={setting!r} is not one of {', '.join(OFFLOAD_SETTINGS)}")
    if min((*model_bytes.values(), margin_bytes, total_bytes or 0, free_bytes or 0), default=0) < 0:
        raise ValueError("memory sizes cannot be negative")
    names = tuple(n for n in offloadable if n in model_bytes)
    movable = sum(model_bytes[n] for n in names)
    everything = sum(model_bytes.values())

    def plan(offload: bool, reason: str) -> MemoryPlan:
        return MemoryPlan(
            setting, device, offload, dict(model_bytes), names, total_bytes, free_bytes, margin_bytes, reason
        )

    if device.split(":")[0] == "cpu":
        return plan(False, "the networks run on the CPU: nothing moves")
    if not movable:
        return plan(False, "no completion network is loaded: nothing to move")
    if setting == "never":
        return plan(False, "every network stays on the device, as configured")
    if setting == "always":
        return plan(True, f"the completion networks ({format_bytes(movable)}) wait on the CPU, as configured")
    if total_bytes is None:
        return plan(
            False,
            f"the memory of {device} is unknown: every network stays on it "
            "(runtime.offload=always moves the completion networks off it between uses)",
        )
    free = "" if free_bytes is None else f", {format_bytes(free_bytes)} free"
    need = f"{format_bytes(everything)} of networks + {format_bytes(margin_bytes)} margin"
    fits = everything + margin_bytes <= total_bytes and (
        free_bytes is None or movable + margin_bytes <= free_bytes
    )
    if fits:
        return plan(False, f"{need} fit in {format_bytes(total_bytes)}{free}")
    return plan(
        True,
        f"{need} do not fit in {format_bytes(total_bytes)}{free}: the completion networks "
        f"({format_bytes(movable)}) wait on the CPU and move to {device} for the complete stage",
    )


# ---------------------------------------------------------------------------------- weighing
def networks(models: PipelineModels) -> dict[str, list[torch.nn.Module]]:
    """The torch modules of every loaded network, by display name (networks not loaded left out)."""
    out: dict[str, list[torch.nn.Module]] = {}
    if models.sam3 is not None:
        out[SAM3] = [m for m in (models.sam3.tracker, models.sam3.detector) if m is not None]
    if models.body is not None:
        out[BODY] = [models.body.net, models.body.mhr]
    if models.moge is not None:
        out[MOGE] = [models.moge.model]
    if models.completion is not None:
        c = models.completion
        out[DEPTH] = [c.depth.model]
        for name, vas in ((AMODAL, c.amodal), (CONTENT, c.content)):
            out[name] = [vas.unet, vas.vae, vas.image_encoder]
    return out


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the parameters and buffers of ``modules`` at their dtype, each storage once (tied or
    shared weights, such as SAM-3's tracker and detector backbone, count once)."""
    storages: dict[tuple[str, int], int] = {}
    for module in modules:
        for t in itertools.chain(module.parameters(), module.buffers()):
            storage = t.untyped_storage()
            storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def module_device(modules: Sequence[torch.nn.Module]) -> str:
    """The device of the first parameter (or buffer) of ``modules``, e.g. ``"cuda:0"``; ``"none"``
    for modules without tensors."""
    for module in modules:
        for t in itertools.chain(module.parameters(), module.buffers()):
            return str(t.device)
    return "none"


def network_bytes(models: PipelineModels) -> dict[str, int]:
    """Bytes of every loaded network, by display name (`module_bytes`)."""
    return {name: module_bytes(mods) for name, mods in networks(models).items()}


# ---------------------------------------------------------------------------------- placement
class Placement:
    """The plan in force and the mover of the offloaded networks (one per `PipelineModels`).

    Args:
        plan: the decision.
        movable: the offloadable networks; on ``home`` when the plan offloads them.
        device: where they run.
        home: where they wait between uses.
    """

    def __init__(
        self,
        plan: MemoryPlan,
        movable: Sequence[Movable],
        device: torch.device | str,
        home: torch.device | str,
    ) -> None:
        self.plan = plan
        self.movable = tuple(movable)
        self.device = device
        self.home = home
        self._lock = threading.Lock()
        self._users = 0

    @property
    def users(self) -> int:
        """Blocks inside `on_device` now (the networks are on the device while it is above 0)."""
        return self._users

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        """The offloaded networks on the device for the block, then back home with the CUDA
        allocator's cache emptied; nested or concurrent blocks share one move. Nothing moves when
        the plan keeps them resident.

        Raises:
            torch.OutOfMemoryError: the device has no room for them (they are moved back first).
        """
        if not self.plan.offload:
            yield
            return
        with self._lock:
            if self._users == 0:
                try:
                    self._move(self.device)
                except BaseException:
                    self._move_home()
                    raise
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._move_home()

    def _move(self, device: torch.device | str) -> None:
        for model in self.movable:
            model.to(device)

    def _move_home(self) -> None:
        import torch

        self._move(self.home)
        torch.cuda.empty_cache()  # a no-op without CUDA; else hands the freed blocks back


def plan_now(
    model_bytes: Mapping[str, int], device: torch.device, runtime: RuntimeConfig, *, absent_bytes: int = 0
) -> MemoryPlan:
    """`plan_memory` for ``device`` as it is now (`torch.cuda.mem_get_info` on CUDA).

    Args:
        model_bytes: bytes of every network, by name.
        device: the compute device.
        runtime: the ``runtime`` config section (``offload``, ``offload_margin_gb``).
        absent_bytes: bytes of the networks that stay resident but are not on the device now
            (taken off its free memory).
    """
    import torch

    total = free = None
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        free = max(0, free - absent_bytes)
    return plan_memory(
        model_bytes,
        OFFLOADABLE,
        setting=runtime.offload,
        device=str(device),
        total_bytes=total,
        free_bytes=free,
        margin_bytes=round(runtime.offload_margin_gb * GB),
    )


def load_device(setting: str, device: torch.device) -> torch.device:
    """Where the offloadable networks are loaded: the CPU whenever the plan may keep them there
    (a device other than the CPU and ``runtime.offload`` not ``never``), else ``device``."""
    import torch

    return torch.device(HOST) if device.type != HOST and setting != "never" else device


def offloadable(models: PipelineModels) -> list[Movable]:
    """The loaded networks the plan may move: the completion networks, if loaded."""
    c = models.completion
    return [] if c is None else [c.depth, c.amodal, c.content]


def place(models: PipelineModels, device: torch.device, runtime: RuntimeConfig) -> Placement:
    """Decide the plan for the loaded ``models`` and carry it out (logged).

    Args:
        models: the loaded networks, the offloadable ones on `load_device`.
        device: the compute device (the other networks are on it).
        runtime: the ``runtime`` config section (``offload``, ``offload_margin_gb``).

    Returns:
        The placement: the offloadable networks moved to ``device`` when they stay resident.
    """
    plan = plan_now(network_bytes(models), device, runtime)
    home = load_device(runtime.offload, device)
    movable = offloadable(models)
    if not plan.offload:
        for model in movable:
            model.to(device)
    log.info("GPU memory plan: %s", plan.describe())
    return Placement(plan, movable, device, home)


@contextlib.contextmanager
def for_stage(models: PipelineModels, model: str | None) -> Iterator[dict[str, str]]:
    """A stage's networks where it needs them while it runs (the driver wraps every stage in it).

    Args:
        models: the loaded networks.
        model: the stage's `PipelineModels` field (``Stage.model``).

    Yields:
        The stage's manifest fields: ``{"memory_plan": "offload" | "resident"}`` for the stage of
        the offloadable networks when they are loaded, else nothing.
    """
    placement = models.placement
    if placement is None or model != OFFLOADED_FIELD or not placement.movable:
        yield {}
        return
    with placement.on_device():
        yield {"memory_plan": placement.plan.mode}


class HalvingBatch:
    """A batch size that halves when the device runs out of memory, down to 1, and stays there.

    Every batched network call of a stage goes through one instance (`map`): a batch that raises
    ``torch.OutOfMemoryError`` is retried whole at half the size, after the allocator's cache is
    emptied; batches already done are kept. The results must not depend on how the items are
    batched (each stage using it says why they do not). The size in use is noted on the stage's
    job under ``key`` (the manifest's stage entry), beside ``<key>_configured``.

    Args:
        size: the configured batch size (at least 1).
        key: the config key it comes from (e.g. ``batch_size``), for the log and the manifest.
        job: the stage's job, or None.
    """

    def __init__(self, size: int, key: str, job: Job | None = None) -> None:
        if size < 1:
            raise ValueError(f"{key} = {size}: a batch holds at least 1 item")
        self.size = size
        self.key = key
        self._job = job
        if job is not None:
            job.note(f"{key}_configured", size)
            job.note(key, size)

    def map(
        self, call: Callable[[Sequence[Item], int], Sequence[Result]], items: Sequence[Item]
    ) -> list[Result]:
        """``call(batch, size)`` over ``items`` in batches of at most `size`; one result per item, in order.

        Raises:
            torch.OutOfMemoryError: even a batch of 1 does not fit.
        """
        import torch

        out: list[Result] = []
        start = 0
        while start < len(items):
            batch = items[start : start + self.size]
            try:
                out.extend(call(batch, self.size))
                start += len(batch)
                continue
            except torch.OutOfMemoryError as exc:
                if self.size == 1:
                    raise
                reason = one_line(exc)
            # Out of the except block: the error's traceback, and the tensors it holds, are freed.
            self._halve(reason)
            torch.cuda.empty_cache()  # a no-op without CUDA; else hands the failed batch's blocks back
        return out

    def _halve(self, reason: str) -> None:
        old, self.size = self.size, max(1, self.size // 2)
        log.warning("out of memory with %s=%d (%s): retrying with %d", self.key, old, reason, self.size)
        if self._job is not None:
            self._job.note(self.key, self.size)
