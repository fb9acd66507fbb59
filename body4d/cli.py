"""Command-line entry point: ``body4d probe VIDEO``, ``body4d run ...``, ``body4d batch ...``,
``body4d check``, ``body4d doctor``.

Exit codes (`body4d.errors`): 0 done, 1 a bug, 2 bad input (the reason is printed on stderr),
3 out of memory, 4 interrupted (Ctrl-C or SIGTERM). Building the parser and ``probe`` import
nothing heavy (no torch, no transformers): each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from body4d import __version__
from body4d.config import add_config_arguments
from body4d.errors import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_OK, InputError, one_line
from body4d.jobs import interrupt_on_signals


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), as every body4d error is."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` and where to read the usage, then exit with `EXIT_BAD_INPUT`."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _probe(args: argparse.Namespace) -> int:
    from body4d.config import load_config
    from body4d.video import folder_rate, probe

    try:
        cfg = load_config(args.config, overrides=args.set)
        info = probe(args.video, folder_fps=folder_rate(cfg), max_pixels=cfg.limits.max_frame_pixels)
    except InputError as exc:  # a VideoError or a ConfigError
        print(f"body4d probe: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = {
        "frames": info.n_frames,
        "fps": float(info.fps),
        "fps_exact": f"{info.fps.numerator}/{info.fps.denominator}",
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "duration": round(info.duration, 6),
        "rotation": info.rotation,
    }
    print(json.dumps(out))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from body4d.checkpoints import checkpoint_report
    from body4d.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, overrides=args.set)
    except ConfigError as exc:
        print(f"body4d check: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = checkpoint_report(cfg)
    print(report.text())
    if not report.ok:
        names = ", ".join(i.name for i in report.missing)
        print(f"body4d check: missing {names}: run the fix printed above", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="body4d", description=__doc__.splitlines()[0], epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"body4d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "probe",
        help="print {frames, fps, width, height, codec, duration} of a video as JSON",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("video", help="video file or frame folder")
    add_config_arguments(p)  # video.folder_fps and limits.max_frame_pixels apply, as in `body4d run`
    p.set_defaults(func=_probe)

    c = sub.add_parser(
        "check",
        help="validate the config and list missing checkpoints with the fix",
        epilog=f"{EXIT_CODES_HELP}; 2 also when a checkpoint is missing",
    )
    add_config_arguments(c)
    c.set_defaults(func=_check)

    from body4d.batch import add_batch_parser
    from body4d.cli_run import add_run_parser
    from body4d.doctor import add_doctor_parser

    add_run_parser(sub)
    add_batch_parser(sub)
    add_doctor_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        with interrupt_on_signals():
            return int(args.func(args))
    except KeyboardInterrupt as exc:  # a command that does not report its own interruption
        print(f"body4d {args.command}: interrupted by {one_line(exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
