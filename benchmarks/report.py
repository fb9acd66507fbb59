"""The one machine-readable line a benchmark ends with, read by `benchmarks/run_all.py`.

A benchmark prints its tables for people, then calls `headline` once with the figures its README
section leads with (or `skip` when the machine lacks what it needs).
"""

from __future__ import annotations

import json
import sys

RESULT_PREFIX = "BENCHMARK-RESULT "
SKIPPED_PREFIX = "BENCHMARK-SKIPPED "


def headline(name: str, figures: dict[str, float], note: str = "") -> None:
    """Print ``BENCHMARK-RESULT {json}``: the benchmark's headline figures.

    Args:
        name: the benchmark's name in `run_all.BENCHMARKS` (its file name without ``.py``).
        figures: label with its unit (e.g. ``"decode ms/frame"``) -> value.
        note: what the figures leave out (e.g. rows skipped on this machine); "" for nothing.
    """
    payload = {"benchmark": name, "figures": {k: float(v) for k, v in figures.items()}, "note": note}
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def skip(name: str, reason: str) -> None:
    """Print ``BENCHMARK-SKIPPED {json}`` with why this machine cannot run the benchmark, and exit 0."""
    print(SKIPPED_PREFIX + json.dumps({"benchmark": name, "reason": reason}), flush=True)
    sys.exit(0)
