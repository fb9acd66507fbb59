"""``body4d run``: offline processing of one video (segmentation now; later stages plug in here).

    body4d run --input_video V [--prompts prompts.json] [--output_dir D] [--config C]
               [--set key=value ...] [--stop-after masks]

``prompts.json`` maps object ids to clicks in original pixels::

    {"1": [{"frame": 0, "x": 120, "y": 80, "positive": true}, ...], "2": [...]}

Without it, people are found automatically (``sam3.detection_prompt``, re-detected every
``sam3.redetect_every`` frames). Exit codes: 0 done, 2 bad input (one line on stderr), 1 failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from body4d.masks import MAX_OBJ_ID
from body4d.types import Click, Prompts

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
STAGES = ("masks",)  # stages `run` knows, in order; --stop-after picks the last one to run
LABELS_IN_MEMORY_MAX_BYTES = 1 << 30  # larger label volumes go to a temporary memory-mapped file


class PromptFileError(ValueError):
    """prompts.json is unreadable or malformed; the message names the entry and the fix."""


def load_prompts(path: str | Path) -> Prompts:
    """Parse a prompts file ``{"<obj_id>": [{"frame", "x", "y", "positive"}, ...]}``.

    ``positive`` defaults to true. Coordinates are pixels of the original video.

    Raises:
        PromptFileError: missing file, invalid JSON, or an entry of the wrong shape.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PromptFileError(f"prompts file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"prompts file {path} is not valid JSON ({exc})") from exc
    example = '{"1": [{"frame": 0, "x": 120, "y": 80, "positive": true}]}'
    if not isinstance(raw, dict) or not raw:
        raise PromptFileError(f"{path} must map object ids to lists of clicks, e.g. {example}")
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
    if not isinstance(positive, bool):
        raise PromptFileError(f"{where}: positive must be true or false, got {positive!r}")
    return Click(frame=frame, x=float(x), y=float(y), positive=positive)


def add_run_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``run`` subcommand on ``subparsers`` (``set_defaults(func=run_command)``)."""
    p = subparsers.add_parser("run", help="process a video offline: masks (more stages later)")
    p.add_argument(
        "--input_video", "--input-video", dest="input_video", required=True, help="video file or frame folder"
    )
    p.add_argument(
        "--prompts",
        default=None,
        help='JSON {"<obj_id>": [{"frame", "x", "y", "positive"}]}; default: detect people',
    )
    p.add_argument(
        "--output_dir",
        "--output-dir",
        dest="output_dir",
        default=None,
        help="parent of the run folder (default runtime.output_dir)",
    )
    p.add_argument("--config", default=None, help="YAML config (default configs/body4d.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument(
        "--stop-after", dest="stop_after", choices=STAGES, default=STAGES[-1], help="last stage to run"
    )
    p.set_defaults(func=run_command)
    return p


def _bad_input(message: str) -> int:
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "bad input"
    print(f"body4d run: {first_line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_command(args: argparse.Namespace) -> int:
    """Execute ``body4d run``; returns the exit code (see module doc)."""
    from body4d.config import ConfigError, load_config
    from body4d.run_dir import RunDir
    from body4d.stages.segment import apply_prompts, check_prompts, segment_video, write_outputs
    from body4d.video import VideoError, open_video
    from models.registry import resolve_device, resolve_dtype
    from models.sam3 import PromptError, Sam3CheckpointError, Sam3Models

    try:
        cfg = load_config(args.config, overrides=args.set)
    except ConfigError as exc:
        return _bad_input(" ".join(str(exc).split()))
    try:
        prompts = load_prompts(args.prompts) if args.prompts else None
        video = open_video(args.input_video, max_frames=cfg.video.max_frames, max_side=cfg.video.max_side)
        if prompts is not None:
            check_prompts(prompts, len(video), video.info.height, video.info.width)
        device = resolve_device(cfg.runtime.device)
        dtype = resolve_dtype(cfg.runtime.dtype, device)
        models = Sam3Models.load(
            cfg.sam3.ckpt_path, device=device, dtype=dtype, with_detector=prompts is None
        )
    except (PromptFileError, PromptError, VideoError, Sam3CheckpointError, ValueError) as exc:
        return _bad_input(str(exc))

    with ExitStack() as stack:
        stack.enter_context(video)
        sam3 = cfg.sam3
        session = models.open_session(
            video, max_cached_frames=sam3.max_cached_frames, mask_threshold=sam3.mask_threshold
        )
        try:
            if prompts is not None:
                apply_prompts(session, prompts)
        except PromptError as exc:
            return _bad_input(str(exc))
        run = RunDir.create(
            args.output_dir or cfg.runtime.output_dir, input_path=args.input_video, config=cfg
        )
        info = video.info
        run.update_manifest(
            video={
                "n_frames": info.n_frames,
                "fps": f"{info.fps.numerator}/{info.fps.denominator}",
                "height": info.height,
                "width": info.width,
            }
        )
        detect = None
        if prompts is None:
            detect = partial(models.detect, prompt=sam3.detection_prompt, threshold=sam3.detection_threshold)
        labels = _label_volume(stack, len(video), info.height, info.width)
        try:
            with run.stage("masks") as handle:
                result = segment_video(
                    session,
                    detect=detect,
                    redetect_every=sam3.redetect_every,
                    redetect_iou=sam3.redetect_iou,
                    progress=lambda p: log.debug(
                        "masks %d/%d (frame %d, %s)", p.done, p.total, p.frame, p.phase
                    ),
                    out=labels,
                )
                mp4 = write_outputs(
                    run,
                    video,
                    result.track,
                    fps=info.fps,
                    crf=cfg.video.crf,
                    jpeg_quality=cfg.video.jpeg_quality,
                )
                run.write_json(
                    "segmentation.json",
                    {
                        "obj_ids": list(result.track.obj_ids),
                        "first_frames": {str(k): v for k, v in result.first_frames.items()},
                        "mode": "prompts" if prompts is not None else "auto",
                    },
                )
                for rel in ("images", "masks", "masks_vis", mp4.name, "segmentation.json"):
                    handle.artefact(rel)
        except PromptError as exc:
            return _bad_input(str(exc))
    if args.stop_after != STAGES[-1]:
        log.info("stopping after %s", args.stop_after)
    print(
        json.dumps(
            {
                "run_dir": str(run.root),
                "run_id": run.run_id,
                "obj_ids": list(result.track.obj_ids),
                "frames": result.track.n_frames,
            }
        )
    )
    return EXIT_OK


def _label_volume(stack: ExitStack, n: int, height: int, width: int) -> np.ndarray:
    """``uint8[n, H, W]`` zeros: in RAM when small, else a memory-mapped temporary file."""
    if n * height * width <= LABELS_IN_MEMORY_MAX_BYTES:
        return np.zeros((n, height, width), dtype=np.uint8)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="body4d_labels_")))
    return np.lib.format.open_memmap(
        folder / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, height, width)
    )


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m body4d.cli_run --input_video V ...``."""
    parser = argparse.ArgumentParser(prog="body4d")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    args = parser.parse_args(["run", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
