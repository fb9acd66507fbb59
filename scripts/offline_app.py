"""Offline processing with the original's flag: ``python scripts/offline_app.py --input_video V [...]``.

A thin wrapper around ``body4d run`` (same options: --prompts, --output_dir, --config, --set,
--stop-after); see ``body4d/cli_run.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from body4d.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
