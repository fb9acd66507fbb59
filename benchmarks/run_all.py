"""Run every benchmark and rewrite the results table of `benchmarks/README.md`.

Usage: .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...] [--args NAME=ARGS ...]
[--write] [--readme PATH] [--timeout S]

Each benchmark of `BENCHMARKS` runs in a fresh process (this Python, the repository root as the
working folder and first on ``PYTHONPATH``) with the arguments its README section gives; its wall
time, exit status and headline figures (the ``BENCHMARK-RESULT`` line of `report.headline`) make
one row. The table between the ``<!-- run_all:start -->`` / ``<!-- run_all:end -->`` markers is
replaced, after a description of the machine, atomically. A run of every benchmark with its
documented arguments writes the README; ``--quick`` (smoke-test arguments), ``--only`` or
``--args`` write it only with ``--write``, as their numbers are not the documented results.

Exit codes: 0 every benchmark ran or was skipped, 1 one failed or timed out, 2 bad arguments or a
README without the markers.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import RESULT_PREFIX, SKIPPED_PREFIX  # noqa: E402

from body4d.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, InputError  # noqa: E402
from body4d.run_dir import atomic_write_bytes  # noqa: E402

log = logging.getLogger("run_all")

README = ROOT / "benchmarks" / "README.md"
START_MARKER = "<!-- run_all:start -->"
END_MARKER = "<!-- run_all:end -->"
# The longest benchmark (long_video: two whole runs of 300 and 3000 frames at 720p) took 30 min
# on the shared 2-core box; an hour means only a hung benchmark is stopped.
DEFAULT_TIMEOUT_S = 3600.0
# A failed row quotes the last line of the benchmark's stderr (the exception), cut to this length.
REASON_CHARS = 200


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and its arguments.

    Attributes:
        name: the script's file name in ``benchmarks/`` without ``.py``.
        args: the arguments its README section gives (the documented results).
        quick: small arguments for a smoke run (seconds to a minute on an idle 2-core box).
    """

    name: str
    args: tuple[str, ...]
    quick: tuple[str, ...]

    def command(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, f"benchmarks/{self.name}.py", *args]


BENCHMARKS = (
    Benchmark("video_io", ("--frames", "120"), ("--frames", "10")),
    Benchmark(
        "sam3_memory",
        ("--sizes", "112", "224", "--frames", "16", "32", "64", "128", "--objects", "3"),
        ("--sizes", "112", "--frames", "16", "--objects", "1"),
    ),
    Benchmark("sam3dbody_bench", (), ()),
    Benchmark("reconstruct_cpu", ("--frames", "60", "--people", "5"), ("--frames", "6", "--people", "2")),
    Benchmark("render_bench", (), ("--frames", "3", "--people", "2")),
    Benchmark("obj_export", ("--meshes", "200", "--workers", "2"), ("--meshes", "4", "--workers", "2")),
    Benchmark("smoothing", (), ("--frames", "100", "--people", "1")),
    Benchmark("occlusion_detection", (), ("--seeds", "1", "--frames", "30")),
    Benchmark("completion_schedule", (), ("--steps", "1")),
    Benchmark("click_latency", ("--http",), ("--clicks", "3")),
    Benchmark("throughput", (), ("--frames", "8", "--people", "2", "--width", "320", "--height", "240")),
    Benchmark(
        "long_video",
        ("--frames", "300", "3000", "--set", "render.enable=false", "--disk-frames", "100"),
        ("--frames", "10", "20", "--set", "render.enable=false", "--disk-frames", "0"),
    ),
)


@dataclass
class Result:
    """One benchmark's row: the command run, how it ended and its headline figures."""

    name: str
    command: list[str]
    status: str = "ok"
    failed: bool = False
    seconds: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""


def run_benchmark(bench: Benchmark, args: tuple[str, ...], timeout_s: float) -> Result:
    """Run one benchmark in a fresh process from the repository root and read its last line."""
    command = bench.command(args)
    result = Result(bench.name, command)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        result.seconds = time.perf_counter() - start
        result.status, result.failed = f"timed out after {timeout_s:.0f} s", True
        return result
    result.seconds = time.perf_counter() - start
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:
        last = next(
            (line.strip() for line in reversed(proc.stderr.splitlines()) if line.strip()), "no stderr"
        )
        result.status, result.failed = f"failed (exit {proc.returncode}): {last[:REASON_CHARS]}", True
        return result
    skipped = [line for line in lines if line.startswith(SKIPPED_PREFIX)]
    if skipped:
        result.status = "skipped: " + json.loads(skipped[-1].removeprefix(SKIPPED_PREFIX))["reason"]
        return result
    results = [line for line in lines if line.startswith(RESULT_PREFIX)]
    if not results:
        result.status, result.failed = "failed: exited 0 without a BENCHMARK-RESULT line", True
        return result
    payload = json.loads(results[-1].removeprefix(RESULT_PREFIX))
    result.figures, result.note = payload["figures"], payload["note"]
    return result


def machine() -> dict[str, str]:
    """What the figures were measured on: CPU, cores, RAM, GPU, OpenGL, OS and versions.

    The GPU comes from nvidia-smi and the versions from package metadata: importing torch here
    would take seconds of every run.
    """
    from body4d.doctor import gl_renderer, nvidia_smi

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    driver, gpus = nvidia_smi()
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "RAM": f"{ram:.1f} GiB",
        "GPU": f"{' + '.join(gpus)} (driver {driver})" if gpus else f"none (nvidia-smi: {driver})",
        "OpenGL": gl_renderer(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "numpy": importlib.metadata.version("numpy"),
    }


def format_value(value: float) -> str:
    """Three significant digits, whole numbers with thousands separators from 1,000 up."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_block(results: list[Result], info: dict[str, str], loads: tuple[float, float], label: str) -> str:
    """The text between the markers: when and on what it was measured, then one row per benchmark."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    total = sum(r.seconds for r in results)
    cores = os.cpu_count() or 1
    loaded = max(loads) > cores
    lines = [
        f"Measured {now} by `benchmarks/run_all.py`{label}, {total:.0f} s in all.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        f"Load average {loads[0]:.1f} at the start and {loads[1]:.1f} at the end on {cores} cores"
        + (": the box was shared, so wall times are inflated." if loaded else "."),
        "",
        "| benchmark | command | status | wall s | headline figures |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        command = shlex.join([".venv/bin/python", *r.command[1:]])
        figures = "; ".join(f"{k} **{format_value(v)}**" for k, v in r.figures.items())
        if r.note:
            figures = f"{figures} ({r.note})" if figures else r.note
        lines.append(f"| {r.name} | `{command}` | {_cell(r.status)} | {r.seconds:.1f} | {_cell(figures)} |")
    return "\n".join(lines)


def marker_span(text: str, path: Path) -> tuple[int, int]:
    """Where the block between the markers starts and ends in ``text``.

    Raises:
        InputError: the markers are missing, repeated or out of order.
    """
    if text.count(START_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise InputError(
            f"{path} must hold exactly one {START_MARKER} and one {END_MARKER} line: add them where the "
            "results table goes"
        )
    start, end = text.index(START_MARKER) + len(START_MARKER), text.index(END_MARKER)
    if end < start:
        raise InputError(f"{path}: {END_MARKER} comes before {START_MARKER}; swap them")
    return start, end


def write_readme(path: Path, block: str) -> None:
    """Replace the text between the markers of ``path`` with ``block`` (temporary file + rename)."""
    text = path.read_text(encoding="utf-8")
    start, end = marker_span(text, path)
    atomic_write_bytes(path, (text[:start] + "\n" + block + "\n" + text[end:]).encode("utf-8"))


def parse_overrides(items: list[str], known: dict[str, Benchmark]) -> dict[str, tuple[str, ...]]:
    """``NAME=ARGS`` strings -> arguments per benchmark name.

    Raises:
        InputError: an item has no ``=`` or names no benchmark.
    """
    out = {}
    for item in items:
        name, sep, args = item.partition("=")
        if not sep:
            raise InputError(
                f'--args {item!r} must be NAME=ARGS, e.g. --args "completion_schedule=--steps 5"'
            )
        if name not in known:
            raise InputError(f"--args names unknown benchmark {name!r}; choose from: {', '.join(known)}")
        out[name] = tuple(shlex.split(args))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print the table, rewrite the README when asked; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small arguments for a smoke run")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument(
        "--args", action="append", default=[], metavar="NAME=ARGS", help="arguments for one benchmark"
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite the README after --quick/--only/--args too"
    )
    parser.add_argument("--readme", type=Path, default=README, help="the README whose table is rewritten")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per benchmark")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    known = {b.name: b for b in BENCHMARKS}
    try:
        unknown = [name for name in ns.only or () if name not in known]
        if unknown:
            raise InputError(
                f"unknown benchmark {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}"
            )
        overrides = parse_overrides(ns.args, known)
        documented = not (ns.quick or ns.only or overrides)
        write = documented or ns.write
        if write:
            marker_span(ns.readme.read_text(encoding="utf-8"), ns.readme)
    except (InputError, OSError) as exc:
        log.error("error: %s", exc)
        return EXIT_BAD_INPUT
    selected = [b for b in BENCHMARKS if not ns.only or b.name in ns.only]
    loads = [os.getloadavg()[0]]
    results = []
    for bench in selected:
        args = overrides.get(bench.name, bench.quick if ns.quick else bench.args)
        log.info("%s: running %s", bench.name, shlex.join(bench.command(args)[1:]))
        result = run_benchmark(bench, args, ns.timeout)
        log.info("%s: %s in %.0f s", bench.name, result.status, result.seconds)
        results.append(result)
    loads.append(os.getloadavg()[0])
    label = " --quick (smoke-test arguments, not results)" if ns.quick else ""
    block = render_block(results, machine(), (loads[0], loads[1]), label)
    print(block)
    if write:
        write_readme(ns.readme, block)
        log.info("rewrote the table in %s", ns.readme)
    return EXIT_FAILURE if any(r.failed for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
