"""``body4d batch``: many videos, one run folder each, the models loaded once per process.

    body4d batch VIDEO... | --list FILE  [--prompts-dir DIR] [--output_dir D] [--config C]
                 [--set key=value ...] [--stop-after STAGE] [--json]
                 [--ray ADDRESS|auto [--gpus-per-video N] [--workers N]]

Inputs are videos or frame folders, given on the command line and/or in ``--list`` (one path a
line; ``#`` comments and blank lines ignored; relative paths are relative to the list file). Their
stems must be unique: ``--prompts-dir`` holds ``<stem>.json`` (the format of ``body4d run
--prompts``) for the videos to prompt, and people are detected in a video without one. A problem
with the batch itself (a missing input, a duplicate stem, a prompts file without its video or
malformed, a missing checkpoint) exits 2 before any video is processed.

Locally the videos run one after the other in this process; with ``--ray`` one per Ray worker
(`body4d.batch_ray`). A video that fails with a bug (1) or out of memory (3) is retried once,
resuming its run folder (its finished stages are kept); bad input (2, e.g. a truncated file) is
not retried. The batch's exit code is 0 when every video is done, else the most severe code of
its videos: 4 interrupted, then 1 a bug, then 3 out of memory, then 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from body4d.config import add_config_arguments
from body4d.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    InputError,
    exit_code,
)

if TYPE_CHECKING:
    from body4d.config import Config
    from body4d.driver import PipelineModels
    from body4d.types import Prompts

log = logging.getLogger(__name__)

# A video failing with these codes is run again: a bug may be a flaky node or driver, and an
# out-of-memory may pass once other work on the GPU is gone. Bad input fails the same way again.
RETRIED_CODES = frozenset({EXIT_FAILURE, EXIT_OUT_OF_MEMORY})
# How many times a failed video is run again (the "retried once").
RETRIES = 1
# The batch's exit code is the first of these that any video returned (most severe first): an
# interrupted batch is unfinished, a bug needs a developer, out of memory a bigger GPU or
# smaller settings, bad input only the user's fix.
SEVERITY = (EXIT_INTERRUPTED, EXIT_FAILURE, EXIT_OUT_OF_MEMORY, EXIT_BAD_INPUT)
STATUS = {
    EXIT_OK: "done",
    EXIT_FAILURE: "failed",
    EXIT_BAD_INPUT: "bad input",
    EXIT_OUT_OF_MEMORY: "out of memory",
    EXIT_INTERRUPTED: "interrupted",
}
PROMPTS_SUFFIX = ".json"


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch.

    Attributes:
        video: absolute path of the video file or frame folder.
        prompts: its clicks (``--prompts-dir``/<stem>.json), None = detect people.
    """

    video: Path
    prompts: Prompts | None = None

    @property
    def name(self) -> str:
        """The video's stem: its name in the summary and its prompts file's name."""
        return self.video.stem


@dataclass
class VideoResult:
    """How one video of a batch ended (over all its attempts).

    Attributes:
        video: the input path.
        code: its exit code (`body4d.errors`).
        run_id: its run folder's name (None if none was created).
        run_dir: the run folder.
        people: object ids found (None if the masks were not made).
        seconds: wall time over all attempts.
        attempts: how many times it ran.
        error: the one-line reason of a failure.
    """

    video: str
    code: int
    run_id: str | None = None
    run_dir: str | None = None
    people: int | None = None
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None

    @property
    def status(self) -> str:
        return STATUS.get(self.code, "failed")


def read_list(path: Path) -> list[Path]:
    """The paths of a ``--list`` file: one a line, ``#`` comments and blank lines ignored,
    relative paths relative to the file's folder.

    Raises:
        InputError: the file cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"--list {path} cannot be read ({exc}): pass a text file with one path a line"
        ) from exc
    paths = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            paths.append(path.parent / Path(entry).expanduser())
    return paths


def collect_inputs(
    inputs: Sequence[str], list_file: str | None = None, prompts_dir: str | None = None
) -> list[BatchItem]:
    """The batch's videos with their prompts, checked before any work.

    Args:
        inputs: videos or frame folders from the command line.
        list_file: a ``--list`` file (`read_list`), added after ``inputs``.
        prompts_dir: folder of ``<video stem>.json`` prompts files.

    Raises:
        InputError: no input, a missing input or list, two inputs with one stem, a missing
            prompts folder, a prompts file matching no video, or a malformed prompts file.
    """
    from body4d.cli_run import load_prompts

    paths = [Path(p).expanduser() for p in inputs]
    if list_file:
        paths += read_list(Path(list_file).expanduser())
    if not paths:
        raise InputError("no videos: pass video files or frame folders, or --list FILE with one a line")
    seen: dict[str, Path] = {}
    for path in paths:
        if not path.exists():
            raise InputError(f"input {path} does not exist: fix the path or remove it from the batch")
        if path.stem in seen:
            raise InputError(
                f"{seen[path.stem]} and {path} share the name {path.stem!r}: rename one "
                "(a batch names run summaries and prompts files by the video's stem)"
            )
        seen[path.stem] = path.resolve()
    prompts: dict[str, Prompts] = {}
    if prompts_dir:
        folder = Path(prompts_dir).expanduser()
        if not folder.is_dir():
            raise InputError(f"--prompts-dir {folder} is not a folder: pass the folder of <video stem>.json")
        for file in sorted(folder.glob(f"*{PROMPTS_SUFFIX}")):
            if file.stem not in seen:
                raise InputError(
                    f"prompts file {file} matches no video of the batch (no input named {file.stem}.*): "
                    "add its video or move the file out of --prompts-dir"
                )
            prompts[file.stem] = load_prompts(file)
    return [BatchItem(video, prompts.get(name)) for name, video in seen.items()]


def model_needs(cfg: Config, stop_after: str, items: Sequence[BatchItem]) -> dict[str, bool]:
    """The `body4d.driver.load_models` flags for every video of ``items`` up to ``stop_after``."""
    from body4d.recipe import STAGES

    last = STAGES.index(stop_after)
    return {
        "sam3": True,
        "detector": any(item.prompts is None for item in items),
        "body": last >= STAGES.index("recover"),
        "camera": last >= STAGES.index("camera"),
        "completion": cfg.completion.enable and last >= STAGES.index("complete"),
    }


def process_video(
    item: BatchItem,
    cfg: Config,
    models: PipelineModels,
    output_dir: Path,
    stop_after: str,
    resume: str | None = None,
) -> VideoResult:
    """Run one video of a batch with loaded models; every failure becomes the result's code.

    Args:
        item: the video and its prompts.
        cfg: the configuration.
        models: networks loaded for the whole batch (`model_needs`).
        output_dir: parent of the run folders.
        stop_after: last stage.
        resume: continue this run folder (a retry) instead of creating one.

    Returns:
        Its `VideoResult` (``attempts`` 1).
    """
    from body4d.driver import reconstruct
    from body4d.retention import run_lock
    from body4d.run_dir import RunDir
    from body4d.stages.segment import check_prompts
    from body4d.video import open_configured

    started = time.monotonic()
    run: RunDir | None = None
    try:
        video = open_configured(item.video, cfg)
        with video:
            if item.prompts is not None:
                check_prompts(item.prompts, len(video), video.info.height, video.info.width)
            if resume:
                run = RunDir.open(output_dir, resume, cfg)
            else:
                run = RunDir.create(output_dir, cfg, input_path=item.video)
            with run_lock(run.root.parent, run.run_id):  # retention never deletes a run in progress
                result = reconstruct(video, run, cfg, models, prompts=item.prompts, stop_after=stop_after)
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if code == EXIT_FAILURE:
            log.exception("video %s failed unexpectedly", item.video)
        return VideoResult(
            str(item.video),
            code,
            run_id=run.run_id if run else None,
            run_dir=str(run.root) if run else None,
            seconds=round(time.monotonic() - started, 3),
            error=" ".join(str(exc).split()) or type(exc).__name__,
        )
    return VideoResult(
        str(item.video),
        EXIT_OK,
        run_id=result.run_id,
        run_dir=str(result.root),
        people=len(result.obj_ids),
        seconds=round(time.monotonic() - started, 3),
    )


def should_retry(result: VideoResult) -> bool:
    """True when ``result`` failed in a way worth another attempt and has attempts left."""
    return result.code in RETRIED_CODES and result.attempts <= RETRIES


def retried(previous: VideoResult, result: VideoResult) -> VideoResult:
    """``result`` of a retry, counting the attempts and seconds of ``previous`` too."""
    return dataclasses.replace(
        result,
        run_id=result.run_id or previous.run_id,
        run_dir=result.run_dir or previous.run_dir,
        attempts=previous.attempts + 1,
        seconds=round(previous.seconds + result.seconds, 3),
    )


def with_retry(attempt: Callable[[str | None], VideoResult]) -> VideoResult:
    """Call ``attempt(resume_run_id)`` until it succeeds or `should_retry` says stop.

    Args:
        attempt: runs the video once; gets the run id to resume (None the first time).
    """
    result = attempt(None)
    while should_retry(result):
        log.warning("%s %s (%s): retrying it", result.video, result.status, result.error)
        result = retried(result, attempt(result.run_id))
    return result


def run_local(
    items: Sequence[BatchItem], cfg: Config, output_dir: Path, stop_after: str
) -> list[VideoResult]:
    """Process ``items`` one after the other in this process, the models loaded once.

    Raises:
        models.errors.CheckpointError: a checkpoint is missing (before any video ran).
    """
    from body4d.driver import load_models

    models = load_models(cfg, **model_needs(cfg, stop_after, items))
    results: list[VideoResult] = []
    for item in items:
        results.append(
            with_retry(
                lambda resume, item=item: process_video(item, cfg, models, output_dir, stop_after, resume)
            )
        )
        if results[-1].code == EXIT_INTERRUPTED:
            break
    results += [
        VideoResult(str(i.video), EXIT_INTERRUPTED, attempts=0, error="not run: the batch was interrupted")
        for i in items[len(results) :]
    ]
    return results


def batch_code(results: Sequence[VideoResult]) -> int:
    """The batch's exit code: 0 if every video is done, else the most severe (`SEVERITY`)."""
    codes = {r.code for r in results}
    return next((code for code in SEVERITY if code in codes), EXIT_OK)


def summary_table(results: Sequence[VideoResult]) -> str:
    """The summary: one row per video (video, run id, status, people, seconds, tries), then one
    line per failure with its reason."""
    rows = [("video", "run id", "status", "people", "seconds", "tries")]
    rows += [
        (
            Path(r.video).name,
            r.run_id or "-",
            r.status,
            "-" if r.people is None else str(r.people),
            f"{r.seconds:.1f}",
            str(r.attempts),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    done = sum(r.code == EXIT_OK for r in results)
    lines.append(f"{done} of {len(results)} videos done")
    lines += [f"{Path(r.video).name}: {r.error}" for r in results if r.code != EXIT_OK and r.error]
    return "\n".join(lines)


def summary_json(results: Sequence[VideoResult]) -> dict[str, Any]:
    """The ``--json`` summary: the batch's exit code and every video's result with its status."""
    return {
        "code": batch_code(results),
        "videos": [{**dataclasses.asdict(r), "status": r.status} for r in results],
    }


def add_batch_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``batch`` subcommand on ``subparsers`` (``set_defaults(func=batch_command)``)."""
    p = subparsers.add_parser(
        "batch", help="process many videos, one run each, locally or one per GPU worker of a Ray cluster"
    )
    p.add_argument("inputs", nargs="*", metavar="VIDEO", help="video files or frame folders")
    p.add_argument(
        "--list",
        dest="list_file",
        default=None,
        metavar="FILE",
        help="text file of inputs, one a line (# comments)",
    )
    p.add_argument(
        "--prompts-dir",
        "--prompts_dir",
        dest="prompts_dir",
        default=None,
        metavar="DIR",
        help="folder of <video stem>.json prompts (as body4d run --prompts); a video without one: detect people",
    )
    p.add_argument(
        "--output_dir",
        "--output-dir",
        dest="output_dir",
        default=None,
        help="parent of the run folders (default runtime.output_dir); with --ray, a folder every worker shares",
    )
    add_config_arguments(p)
    p.add_argument(
        "--stop-after", dest="stop_after", default=None, metavar="STAGE", help="last stage of every run"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (auto = the one `ray start` joined on this machine), one video per worker",
    )
    p.add_argument(
        "--gpus-per-video",
        dest="gpus_per_video",
        type=float,
        default=1.0,
        metavar="N",
        help="with --ray: GPUs each worker reserves (0 = CPU workers)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: workers to start (default: the cluster's GPUs / --gpus-per-video, 1 for CPU)",
    )
    p.set_defaults(func=batch_command)
    return p


def batch_command(args: argparse.Namespace) -> int:
    """Execute ``body4d batch``; prints the summary, returns the batch's exit code (module doc)."""
    from transformers.utils import logging as hf_logging

    from body4d.config import load_config
    from body4d.recipe import STAGES

    hf_logging.disable_progress_bar()  # headless logs: one line per event, no weight-loading bars
    try:
        cfg = load_config(args.config, overrides=args.set)
        output_dir = Path(args.output_dir or cfg.runtime.output_dir).expanduser().resolve()
        stop_after = args.stop_after or STAGES[-1]
        if stop_after not in STAGES:
            raise InputError(f"--stop-after {stop_after!r} is not a stage: use one of {', '.join(STAGES)}")
        items = collect_inputs(args.inputs, args.list_file, args.prompts_dir)
        if args.ray is None:
            results = run_local(items, cfg, output_dir, stop_after)
        else:
            from body4d.batch_ray import run_on_ray

            results = run_on_ray(
                items,
                cfg,
                output_dir,
                stop_after,
                address=args.ray,
                gpus_per_video=args.gpus_per_video,
                workers=args.workers,
            )
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if code == EXIT_FAILURE:
            log.exception("body4d batch failed unexpectedly")
        print(f"body4d batch: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return code
    print(json.dumps(summary_json(results)) if args.json else summary_table(results))
    return batch_code(results)
