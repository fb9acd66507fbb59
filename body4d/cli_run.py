"""``body4d run``: offline processing of one video through `body4d.driver` (the app's recipe).

    body4d run --input_video V [--prompts prompts.json] [--output_dir D] [--config C]
               [--set key=value ...] [--masks DIR] [--resume RUN_ID [--force | --repair ID]]
               [--stop-after masks|camera|recover|complete|refine|smooth|export|render|bundle]

``prompts.json`` maps object ids to clicks in original pixels::

    {"1": [{"frame": 0, "x": 120, "y": 80, "positive": true}, ...], "2": [...]}

``--resume RUN_ID --repair ID --prompts fix.json`` corrects one target of a finished run: the
clicks of ``ID`` in ``fix.json`` re-propagate that target alone from the earliest clicked frame
(`body4d.driver.repair_masks`), and the stages after the masks then redo only the changed people.

Without prompts, people are found automatically (``sam3.detection_prompt``, re-detected every
``sam3.redetect_every`` frames). Exit codes (`body4d.errors`): 0 done, 1 a bug, 2 bad input,
3 out of memory, 4 interrupted (Ctrl-C or SIGTERM: the running stage is recorded as interrupted,
its partial files are removed, ``--resume`` continues); every failure prints one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from body4d.config import LimitsConfig, add_config_arguments
from body4d.errors import (
    EXIT_CODES_HELP,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    InputError,
    exit_code,
    one_line,
    require_folder_path,
)
from body4d.types import Click, Prompts
from models.frames import MAX_OBJ_ID

log = logging.getLogger(__name__)

# A click is ~50 bytes of JSON, pretty-printed ~100: a prompts file larger than this many bytes per
# allowed click (limits.max_clicks) cannot be valid and is refused unread.
PROMPT_BYTES_PER_CLICK = 1024


class PromptFileError(InputError):
    """prompts.json is unreadable or malformed; the message names the entry and the fix."""


def load_prompts(path: str | Path, limits: LimitsConfig | None = None) -> Prompts:
    """Parse a prompts file ``{"<obj_id>": [{"frame", "x", "y", "positive"}, ...]}``.

    ``positive`` defaults to true. Coordinates are pixels of the original video.

    Args:
        path: the JSON file.
        limits: ``limits.max_people`` and ``limits.max_clicks`` (default: the schema's defaults).

    Raises:
        PromptFileError: missing, non-regular or oversized file, invalid JSON, more targets or
            clicks than the limits, or an entry of the wrong shape.
    """
    from body4d.video import VideoError, check_regular_file

    path = Path(path)
    limits = limits or LimitsConfig()
    if not path.exists():
        raise PromptFileError(f"prompts file {path} does not exist")
    try:
        check_regular_file(path, "prompts file")
    except VideoError as exc:
        raise PromptFileError(str(exc)) from exc
    max_bytes = limits.max_clicks * PROMPT_BYTES_PER_CLICK
    if path.stat().st_size > max_bytes:
        raise PromptFileError(
            f"prompts file {path} is {path.stat().st_size} bytes, more than {max_bytes} "
            f"(limits.max_clicks={limits.max_clicks} clicks): give fewer clicks or raise limits.max_clicks"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON's errors
        raise PromptFileError(f"prompts file {path} is not valid JSON ({exc})") from exc
    example = '{"1": [{"frame": 0, "x": 120, "y": 80, "positive": true}]}'
    if not isinstance(raw, dict) or not raw:
        raise PromptFileError(f"{path} must map object ids to lists of clicks, e.g. {example}")
    if len(raw) > limits.max_people:
        raise PromptFileError(
            f"{path} prompts {len(raw)} targets, more than limits.max_people={limits.max_people}: "
            f"prompt fewer people or raise the limit with --set limits.max_people={min(len(raw), MAX_OBJ_ID)}"
        )
    n_clicks = sum(len(items) for items in raw.values() if isinstance(items, list))
    if n_clicks > limits.max_clicks:
        raise PromptFileError(
            f"{path} holds {n_clicks} clicks, more than limits.max_clicks={limits.max_clicks}: "
            f"give fewer clicks or raise the limit with --set limits.max_clicks={n_clicks}"
        )
    clicks: dict[int, tuple[Click, ...]] = {}
    for key, items in raw.items():
        try:
            obj_id = int(key)
        except ValueError:
            obj_id = 0
        if not 1 <= obj_id <= MAX_OBJ_ID or str(obj_id) != str(key).strip():
            raise PromptFileError(f"{path}: object id {key!r} must be an integer from 1 to {MAX_OBJ_ID}")
        if not isinstance(items, list) or not items:
            raise PromptFileError(f"{path}: object {key} needs a non-empty list of clicks, e.g. {example}")
        clicks[obj_id] = tuple(_parse_click(path, key, i, item) for i, item in enumerate(items))
    return Prompts(clicks)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key written twice (JSON keeps only the last one silently).

    Raises:
        ValueError: a repeated key (reported as invalid JSON).
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object: merge its clicks into one list")
        out[key] = value
    return out


def _parse_click(path: Path, key: str, index: int, item: Any) -> Click:
    where = f"{path}: click {index} of object {key}"
    if not isinstance(item, dict):
        raise PromptFileError(f"{where} must be an object with frame, x, y and positive")
    unknown = set(item) - {"frame", "x", "y", "positive"}
    if unknown:
        raise PromptFileError(f"{where} has unknown keys {sorted(unknown)}: use frame, x, y, positive")
    frame, x, y = item.get("frame"), item.get("x"), item.get("y")
    positive = item.get("positive", True)
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise PromptFileError(f"{where}: frame must be an integer frame index, got {frame!r}")
    for name, value in (("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PromptFileError(f"{where}: {name} must be a number of pixels, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise PromptFileError(f"{where}: {name} must be a finite number of pixels inside the frame")
    if not isinstance(positive, bool):
        raise PromptFileError(f"{where}: positive must be true or false, got {positive!r}")
    return Click(frame=frame, x=float(x), y=float(y), positive=positive)


def add_run_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``run`` subcommand on ``subparsers`` (``set_defaults(func=run_command)``)."""
    p = subparsers.add_parser(
        "run",
        help="process a video offline: masks, camera, bodies, smoothing, exports",
        epilog=f"{EXIT_CODES_HELP}; on 4 the running stage is recorded as interrupted: --resume continues",
    )
    p.add_argument(
        "--input_video", "--input-video", dest="input_video", required=True, help="video file or frame folder"
    )
    p.add_argument(
        "--prompts",
        default=None,
        help='JSON {"<obj_id>": [{"frame", "x", "y", "positive"}]}; default: detect people',
    )
    p.add_argument(
        "--masks",
        default=None,
        help="folder of palette PNG masks (one per frame, pixel = object id) used instead of segmentation",
    )
    p.add_argument(
        "--output_dir",
        "--output-dir",
        dest="output_dir",
        default=None,
        help="parent of the run folder (default runtime.output_dir)",
    )
    p.add_argument(
        "--resume", default=None, metavar="RUN_ID", help="continue a run folder; done stages are skipped"
    )
    p.add_argument("--force", action="store_true", help="with --resume: redo stages already done")
    p.add_argument(
        "--repair",
        type=int,
        default=None,
        metavar="ID",
        help="with --resume and --prompts: re-propagate target ID from its clicks in the prompts file, "
        "then redo only the changed people",
    )
    add_config_arguments(p)
    p.add_argument(
        "--stop-after",
        dest="stop_after",
        default=None,
        metavar="STAGE",
        help="last stage to run: masks, camera, recover, complete, refine, smooth, export, render or bundle (default: all)",
    )
    p.set_defaults(func=run_command)
    return p


def _fail(exc: BaseException, run: Any = None) -> int:
    """Report ``exc`` on stderr as one line (a traceback in the log for bugs); return its exit code.

    Args:
        exc: what stopped the run.
        run: the `body4d.run_dir.RunDir` by then, or None; an interruption names its stage and
            how to continue.
    """
    code = exit_code(exc)
    text = one_line(exc)
    if code == EXIT_FAILURE:
        log.exception("body4d run failed unexpectedly")
    if code == EXIT_INTERRUPTED and isinstance(exc, KeyboardInterrupt):
        text = f"interrupted by {text} {_where_interrupted(run)}"
    print(f"body4d run: {text}", file=sys.stderr)
    return code


def _where_interrupted(run: Any) -> str:
    """Which stage an interruption stopped and how to continue, for `_fail`."""
    from body4d.recipe import STAGES

    if run is None:
        return "before the run folder was created: nothing was written"
    stopped = [name for name in STAGES if run.stage_status(name) == "interrupted"]
    during = f"during stage {stopped[-1]}" if stopped else "between stages"
    return f"{during}: finished stages are kept in {run.root}; continue with --resume {run.run_id}"


def _check_disk(
    cfg: Any,
    video: Any,
    prompts: Prompts | None,
    run: Any,
    stages: tuple[str, ...],
    force: bool,
    output_dir: Path,
) -> None:
    """Log the frames and the disk use expected (`body4d.disk_use`); refuse a run the disk of
    ``output_dir`` has no room for.

    Args:
        cfg: the configuration.
        video: the opened input.
        prompts: the prompts (their targets are the people), or None.
        run: the resumed run folder (its done stages are not written again unless ``force``), or None.
        stages: the stages up to ``--stop-after``.
        force: ``--force``.
        output_dir: the parent of the run folder.

    Raises:
        body4d.disk_use.DiskSpaceError: less free space than the estimate (names the keys to turn off).
    """
    from body4d.disk_use import DiskSpaceError, estimate_disk, shortfall
    from body4d.memory import format_bytes

    done = set() if run is None or force else {name for name in stages if run.is_done(name)}
    if "masks" in done:
        people, source = len(run.manifest["stages"]["masks"].get("obj_ids", [])), "in the run's masks"
    elif prompts is not None:
        people, source = len(prompts.clicks), "prompted"
    else:
        people, source = 0, ""
    info = video.info
    todo = tuple(name for name in stages if name not in done)
    estimate = estimate_disk(cfg, len(video), info.height, info.width, max(people, 1), stages=todo)
    if source:
        who = f"{people} {'person' if people == 1 else 'people'} {source}"
    else:
        more = estimate_disk(cfg, len(video), info.height, info.width, 2, stages=todo).total - estimate.total
        who = f"people not known before the masks: estimated for 1 (each more adds {format_bytes(more)})"
    # A log line (stderr), so that a run that then fails still ends with exactly one error line.
    log.info(
        "body4d run: %d frames of %dx%d, %s; estimated disk use %s",
        len(video),
        info.width,
        info.height,
        who,
        estimate.describe(),
    )
    problem = shortfall(estimate, output_dir)
    if problem is not None:
        raise DiskSpaceError(problem)


def run_command(args: argparse.Namespace) -> int:
    """Execute ``body4d run``; returns the exit code (`body4d.errors`)."""
    from transformers.utils import logging as hf_logging

    from body4d.config import load_config
    from body4d.driver import load_models, reconstruct, repair_masks
    from body4d.masks import check_mask_folder
    from body4d.recipe import STAGES
    from body4d.retention import run_lock
    from body4d.run_dir import RunDir
    from body4d.stages.segment import check_prompts
    from body4d.video import open_configured

    hf_logging.disable_progress_bar()  # headless logs: one line per event, no weight-loading bars
    run = None
    try:
        cfg = load_config(args.config, overrides=args.set)
        output_dir = args.output_dir or cfg.runtime.output_dir
        require_folder_path(Path(output_dir), "--output_dir" if args.output_dir else "runtime.output_dir")
        if args.force and args.resume is None:
            raise InputError(
                "--force redoes the stages of an existing run: use it with --resume RUN_ID "
                "(a new run does every stage anyway)"
            )
        stop_after = args.stop_after or STAGES[-1]
        if stop_after not in STAGES:
            raise InputError(f"--stop-after {stop_after!r} is not a stage: use one of {', '.join(STAGES)}")
        last = STAGES.index(stop_after)
        prompts = load_prompts(args.prompts, cfg.limits) if args.prompts else None
        if args.repair is not None and (args.resume is None or prompts is None or args.force):
            raise InputError(
                "--repair needs --resume RUN_ID and --prompts FILE with the target's clicks (and no --force)"
            )
        video = open_configured(args.input_video, cfg)
        if prompts is not None:
            check_prompts(prompts, len(video), video.info.height, video.info.width)
        if args.masks:
            check_mask_folder(Path(args.masks), len(video), video.info.height, video.info.width)
        run = RunDir.open(output_dir, args.resume, cfg, video=video) if args.resume is not None else None
        _check_disk(cfg, video, prompts, run, STAGES[: last + 1], args.force, Path(output_dir))
        segment = args.masks is None and not (run is not None and run.is_done("masks") and not args.force)
        models = load_models(
            cfg,
            sam3=segment or args.repair is not None,
            detector=segment and prompts is None,
            body=last >= STAGES.index("recover"),
            camera=last >= STAGES.index("camera"),
            completion=cfg.completion.enable and last >= STAGES.index("complete"),
        )
        if run is None:
            run = RunDir.create(output_dir, cfg, input_path=args.input_video)
        # Held until the run ends: retention (body4d.retention) never deletes a run in progress.
        with video, run_lock(run.root.parent, run.run_id):
            if args.repair is not None:
                assert prompts is not None
                repair_masks(video, run, cfg, models, args.repair, prompts.clicks.get(args.repair, ()))
                prompts = None  # the masks are done: the prompts file only held the repair's clicks
            result = reconstruct(
                video,
                run,
                cfg,
                models,
                prompts=prompts,
                masks_dir=Path(args.masks) if args.masks else None,
                stop_after=stop_after,
                force=args.force,
            )
    except (Exception, KeyboardInterrupt) as exc:
        return _fail(exc, run)
    print(
        json.dumps(
            {
                "run_dir": str(result.root),
                "run_id": result.run_id,
                "obj_ids": list(result.obj_ids),
                "frames": len(video),
                "stages": list(result.done),
            }
        )
    )
    return EXIT_OK
