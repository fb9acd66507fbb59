"""body4d: temporally consistent 4D human mesh recovery from video (SAM-Body4D rebuilt)."""

from __future__ import annotations

__version__ = "0.1.0"
