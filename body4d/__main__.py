"""``python -m body4d`` = the ``body4d`` command."""

from __future__ import annotations

import sys

from body4d.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports this module
    sys.exit(main())
