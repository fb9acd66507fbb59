"""``python -m body4d`` = the ``body4d`` command."""

from __future__ import annotations

import sys

from body4d.cli import main

sys.exit(main())
