"""body4d web app (Gradio): the composition root.

Reads the configuration, reports the environment and the checkpoints, builds the UI, launches.
Run ``python app.py`` (or ``make run``) and open http://127.0.0.1:7860.

Environment: ``BODY4D_HOST`` / ``BODY4D_PORT`` override ``app.host`` / ``app.port``;
``BODY4D_CKPT_ROOT`` / ``BODY4D_OUTPUT_DIR`` override ``paths.ckpt_root`` / ``runtime.output_dir``.
The app starts without checkpoints: its status panel lists what is missing and how to get it.
With every checkpoint present it loads the models once, shared read-only by all sessions; if
loading fails the app still starts and its status panel shows why.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from body4d.config import Config, ConfigError, add_config_arguments, load_config
from body4d.jobs import STOP_SIGNALS

if TYPE_CHECKING:
    import gradio as gr

    from body4d.checkpoints import CheckpointReport
    from body4d.driver import PipelineModels

log = logging.getLogger("body4d.app")

EXIT_BAD_CONFIG = 2
HOST_ENV = "BODY4D_HOST"
PORT_ENV = "BODY4D_PORT"
# Gradio's file cache (uploads) lives beside the runs so one volume holds both; `app.retention_*`
# cleans both (body4d.retention).
GRADIO_CACHE_DIRNAME = ".gradio_cache"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options: an alternative config file and dotted overrides."""
    parser = argparse.ArgumentParser(description="body4d web app")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def app_config(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """The config with ``BODY4D_HOST``/``BODY4D_PORT`` applied, then ``--set`` overrides."""
    overrides = []
    if env.get(HOST_ENV):
        overrides.append(f"app.host={env[HOST_ENV]}")
    if env.get(PORT_ENV):
        overrides.append(f"app.port={env[PORT_ENV]}")
    return load_config(args.config, overrides=overrides + list(args.set), env=env)


def log_environment(cfg: Config) -> None:
    """Log the machine as `body4d doctor` describes it: device, driver, GPU, bf16, OpenGL renderer.

    Args:
        cfg: app configuration (``runtime.device`` and ``runtime.dtype``).
    """
    from body4d.doctor import environment
    from models.devices import resolve_device, resolve_dtype

    try:
        device = resolve_device(cfg.runtime.device)
        dtype = resolve_dtype(cfg.runtime.dtype, device)
    except ValueError as exc:  # a bad runtime.device/dtype: loading the models reports it again
        log.warning("environment not described: %s", exc)
        return
    env = environment(device, dtype)
    for item in dataclasses.fields(env):
        log.info("environment: %s = %s", item.name, getattr(env, item.name))


def load_app_models(cfg: Config, report: CheckpointReport) -> tuple[PipelineModels | None, str | None]:
    """Load every network once when all checkpoints are present.

    Returns:
        ``(models, None)`` when loaded; ``(None, None)`` when checkpoints are missing (nothing is
        tried); ``(None, reason)`` when loading failed (logged with its traceback).
    """
    if not report.ok:
        return None, None
    from body4d.driver import load_models

    log.info("loading the models (device %s, dtype %s)…", cfg.runtime.device, cfg.runtime.dtype)
    try:
        models = load_models(cfg, sam3=True, detector=True, body=True, camera=True)
    except Exception as exc:  # any failure (bad weights, out of memory) must leave the app usable
        log.exception("loading the models failed; model buttons stay disabled")
        return None, f"{type(exc).__name__}: {exc}"
    if report.uses_tiny:
        log.warning("TINY TEST CHECKPOINTS loaded: random weights, every result is meaningless")
    log.info("models loaded")
    return models, None


def main(argv: Sequence[str] | None = None) -> int:
    """Start the web app; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        cfg = app_config(args, os.environ)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    output_dir = Path(cfg.runtime.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Gradio reads GRADIO_TEMP_DIR when it is imported, so it must be set first.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(output_dir / GRADIO_CACHE_DIRNAME))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    # Results are served from the run folders as they are, not copied again into Gradio's cache;
    # OwnerGate serves a run's files only to the sessions that have the run.
    gr.set_static_paths([output_dir])
    from starlette.middleware import Middleware

    from body4d.checkpoints import checkpoint_report
    from body4d.session import SessionStore
    from body4d.ui.access import OwnerGate
    from body4d.ui.api import bind_api
    from body4d.ui.events import UiEvents
    from body4d.ui.examples import example_thumbnails, find_examples
    from body4d.ui.layout import build_layout
    from body4d.ui.loading import BYTES_PER_MB
    from body4d.ui.status import capabilities, layout_spec, upload_limits
    from body4d.ui.system import probe_platform, system_status

    report = checkpoint_report(cfg)
    for line in report.text().splitlines():
        (log.info if report.ok else log.warning)("checkpoints: %s", line)
    models, load_error = load_app_models(cfg, report)
    # Only after the models: probing OpenGL loads Mesa's LLVM (llvmpipe), and triton's LLVM,
    # imported by transformers while the models load, then segfaults the process.
    log_environment(cfg)
    platform = probe_platform(cfg)
    caps = capabilities(
        cfg,
        report,
        segmenter_loaded=models is not None and models.sam3 is not None,
        reconstructor_loaded=models is not None and models.body is not None,
        load_error=load_error,
    )
    items, examples_hint = find_examples(cfg)
    examples, thumbs = example_thumbnails(items)
    log.info("%d example video(s) in %s", len(examples), cfg.app.examples_dir)

    demo, widgets = build_layout(
        layout_spec(
            report,
            caps,
            thumbs,
            load_error,
            upload_limits(cfg),
            system_status(platform, models).markdown(),
            examples_hint,
        ),
    )
    store = SessionStore()
    events = UiEvents(cfg, store, report, caps, examples, models, platform)
    events.bind(demo, widgets)
    bind_api(demo, events)
    # One GPU job at a time; light events (frames, clicks, targets) opt out per event.
    demo.queue(default_concurrency_limit=1)
    events.start_retention()
    gate = Middleware(
        OwnerGate, store=store, output_dir=output_dir, cache_dir=Path(os.environ["GRADIO_TEMP_DIR"])
    )
    log.info("outputs in %s; serving on http://%s:%d", output_dir, cfg.app.host, cfg.app.port)
    serve_until_stopped(
        demo,
        server_name=cfg.app.host,
        server_port=cfg.app.port,
        allowed_paths=[str(output_dir)],
        max_file_size=int(cfg.app.max_upload_mb * BYTES_PER_MB) if cfg.app.max_upload_mb else None,
        ssr_mode=False,
        show_error=True,
        app_kwargs={"middleware": [gate]},
    )
    return 0


def serve_until_stopped(demo: gr.Blocks, **launch: Any) -> None:
    """Serve ``demo`` until SIGINT or SIGTERM (``docker stop``), then close the server and return.

    A signal only sets an event, so one arriving while Gradio is still starting up cannot cut
    the start-up short with an exception; the server is closed once it is up.

    Args:
        demo: the app.
        launch: keyword arguments of ``demo.launch``.
    """
    stop = threading.Event()
    received: list[str] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        demo.launch(prevent_thread_lock=True, **launch)
        stop.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        demo.close()
    log.info("%s: server stopped", received[0])


if __name__ == "__main__":
    sys.exit(main())
