"""Decoded video frames, object ids and prompt errors as the adapters see them (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

# Object ids live in uint8 label maps: 1..255, 0 is background.
MAX_OBJ_ID = 255


class PromptError(ValueError):
    """A prompt (click, mask, object id, frame) is invalid; the message says what to change."""


class FrameSource(Protocol):
    """Random access to decoded RGB frames (``body4d.video.Video`` satisfies it)."""

    def __len__(self) -> int: ...

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``uint8[H, W, 3]`` RGB."""
        ...


class ArrayFrames:
    """`FrameSource` over frames already in memory: ``uint8[T, H, W, 3]`` or a list of ``[H, W, 3]``."""

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray]) -> None:
        self._frames = frames

    def __len__(self) -> int:
        return len(self._frames)

    def frame(self, index: int) -> np.ndarray:
        return np.asarray(self._frames[index])
