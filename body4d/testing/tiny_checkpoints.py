"""Write tiny random checkpoints of every integrated model in the real folder layout (TESTS ONLY).

    python -m body4d.testing.tiny_checkpoints DIR

Then ``body4d run ... --set paths.ckpt_root=DIR`` runs the real loading and inference code end
to end on a CPU in seconds. The weights are random, so the results are meaningless; every folder
carries a ``BODY4D_TINY_TEST_CHECKPOINT`` marker, and the app and ``body4d check`` flag such
checkpoints loudly, so they are never mistaken for real weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from body4d.testing.tiny_depth import DEPTH_DIR, write_tiny_depth
from body4d.testing.tiny_moge import write_tiny_moge
from body4d.testing.tiny_sam3 import write_tiny_sam3
from body4d.testing.tiny_sam3dbody import write_tiny_sam3dbody
from body4d.testing.tiny_vas import AMODAL_DIR, COMPLETION_DIR, write_tiny_vas

log = logging.getLogger(__name__)

WRITERS = {
    "sam3": write_tiny_sam3,
    "sam-3d-body-dinov3": write_tiny_sam3dbody,
    "moge-2-vitl-normal": write_tiny_moge,
    DEPTH_DIR: write_tiny_depth,
    f"{AMODAL_DIR} + {COMPLETION_DIR}": write_tiny_vas,
}


def write_all(root: Path) -> Path:
    """Write every tiny checkpoint under ``root`` (created if missing); returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, writer in WRITERS.items():
        writer(root)
        log.info("tiny %s written under %s", name, root / name)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="folder to write the checkpoints into")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_all(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
