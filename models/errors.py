"""The one error every model adapter raises for a checkpoint it cannot use, and the fix it names."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# How to get the checkpoints (the only code that downloads); {root} is the checkpoint folder.
SETUP_HINT = "python scripts/setup.py --ckpt-root {root}"
# Written by body4d.testing.tiny_checkpoints into every tiny random test checkpoint folder.
TINY_MARKER = "BODY4D_TINY_TEST_CHECKPOINT"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, unreadable or does not fit its model.

    The message names the path, what is wrong and what to do.

    Attributes:
        path: the file or folder at fault.
    """

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(message)


def setup_hint(root: str | Path) -> str:
    """The command that downloads every checkpoint into ``root``."""
    return SETUP_HINT.format(root=root)


# Key names listed in a strict-load error before "... and N more".
MAX_KEYS_SHOWN = 12


def format_keys(keys: Iterable[str]) -> str:
    """``[a, b, ... and N more]`` (sorted) for a strict-load error message."""
    names = sorted(keys)
    more = f", ... and {len(names) - MAX_KEYS_SHOWN} more" if len(names) > MAX_KEYS_SHOWN else ""
    return f"[{', '.join(names[:MAX_KEYS_SHOWN])}{more}]"
