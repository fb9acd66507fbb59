"""`benchmarks/run_all.py`: runs benchmarks in fresh processes and rewrites one README table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"
STALE = "| obj_export | stale row from an older run | ok | 1.0 | nothing |"


def run_all(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "benchmarks/run_all.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def outside(text: str) -> tuple[str, str]:
    """The README text before the start marker and after the end marker."""
    return text.split(START)[0], text.split(END)[1]


@pytest.fixture
def readme(tmp_path: Path) -> Path:
    """A copy of the real README whose table holds a stale row."""
    before, after = outside(README.read_text(encoding="utf-8"))
    path = tmp_path / "README.md"
    path.write_text(f"{before}{START}\n{STALE}\n{END}{after}", encoding="utf-8")
    return path


def test_quick_run_replaces_the_table_once_and_keeps_the_rest(readme: Path) -> None:
    original = readme.read_text(encoding="utf-8")
    for _ in range(2):  # the second run must replace the first one's table, not add another
        res = run_all("--quick", "--only", "obj_export", "--write", "--readme", str(readme))
        assert res.returncode == 0, res.stderr
    text = readme.read_text(encoding="utf-8")
    assert outside(text) == outside(original)
    assert text.count(START) == text.count(END) == 1
    block = text.split(START)[1].split(END)[0]
    assert STALE not in block
    assert f", {os.cpu_count()} cores; RAM " in block and "; GPU " in block and "; Python 3." in block
    assert "--quick (smoke-test arguments, not results)" in block
    rows = [
        line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")
    ]
    assert len(rows) == 1, rows
    cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
    assert cells[:3] == [
        "obj_export",
        "`.venv/bin/python benchmarks/obj_export.py --meshes 4 --workers 2`",
        "ok",
    ]
    figures = dict(re.findall(r"(in process|pool of 2) ms/mesh \*\*([0-9.]+)\*\*", cells[4]))
    assert set(figures) == {"in process", "pool of 2"}
    assert all(float(v) > 0 for v in figures.values())
    assert cells[4] in res.stdout  # the table is printed as well


def test_failed_benchmark_row_and_exit_1(readme: Path) -> None:
    original = readme.read_text(encoding="utf-8")
    # 0 meshes: the benchmark divides by the mesh count, so it fails with a ZeroDivisionError.
    args = ("--only", "obj_export", "--args", "obj_export=--meshes 0", "--readme", str(readme))
    res = run_all(*args)
    assert res.returncode == 1
    assert "failed (exit 1): ZeroDivisionError" in res.stdout
    assert readme.read_text(encoding="utf-8") == original  # --args without --write: not results
    res = run_all(*args, "--write")
    assert res.returncode == 1
    block = readme.read_text(encoding="utf-8").split(START)[1].split(END)[0]
    row = next(line for line in block.splitlines() if line.startswith("| obj_export |"))
    assert (
        "`.venv/bin/python benchmarks/obj_export.py --meshes 0` | failed (exit 1): ZeroDivisionError" in row
    )
    assert STALE not in block


def test_bad_arguments_exit_2_with_one_line(readme: Path, tmp_path: Path) -> None:
    original = readme.read_text(encoding="utf-8")
    res = run_all("--only", "obj_export", "nope", "--write", "--readme", str(readme))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: unknown benchmark 'nope'; choose from: video_io, sam3_memory, sam3dbody_bench, reconstruct_cpu, "
        "render_bench, obj_export, smoothing, occlusion_detection, completion_schedule, click_latency, "
        "throughput, long_video"
    ]
    assert readme.read_text(encoding="utf-8") == original
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n", encoding="utf-8")
    res = run_all("--quick", "--only", "obj_export", "--write", "--readme", str(bare))
    assert res.returncode == 2
    assert "must hold exactly one <!-- run_all:start --> and one <!-- run_all:end --> line" in res.stderr
    assert "Traceback" not in res.stderr
    assert bare.read_text(encoding="utf-8") == "# no markers\n"
