"""Device and precision choice for every network (decided once by the entry point, passed down)."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` → cuda if available, else mps, else cpu; otherwise ``torch.device(spec)``.

    Raises:
        ValueError: an unknown device string, or CUDA requested on a machine without it.
    """
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"runtime.device={spec!r} is not a device: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"runtime.device={spec!r} but CUDA is not available here: use runtime.device=auto or cpu"
        )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Network precision for ``name`` (fp32/bf16/fp16); half precision falls back to fp32 on CPU."""
    if name not in DTYPES:
        raise ValueError(f"runtime.dtype={name!r} is not one of {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if device.type == "cpu" and dtype != torch.float32:
        log.info("runtime.dtype=%s on CPU: using fp32 (half precision is slow or unsupported there)", name)
        return torch.float32
    return dtype
