"""Click latency of the app: from a click on a 1080p frame to the JPEG of the frame with its masks.

Runs the app's own click handler (`body4d.ui.events.UiEvents.click`: the click mapped to video
pixels, `models.sam3.TrackerSession.add_points` on the tiny random SAM-3 checkpoint of
`body4d.testing.tiny_sam3`, masks upsampled to the frame, then label map, overlay and click
markers drawn at the size the browser gets, on the frame downscaled once per frame) and then
Gradio's encoding of the returned frame (``gr.Image.postprocess``: the JPEG the page downloads),
on a synthetic 1920x1080 H.264 clip written by `body4d.video`.

Each click is timed whole and split by wrapping the functions it calls with timers: the network
(the tracker's ``forward``, without the frame reading and preprocessing that happen inside it),
frame decoding, preprocessing to the model side, mask upsampling, the label map (masks resized
to the display and merged), overlay, click markers, downscale of the frame for the browser (done
by the scrub, cached for the clicks on that frame), JPEG encoding, and the rest (session,
prompts, bookkeeping).
"Excluding network" is the whole click minus the network. The clicks follow a user: on each of
several frames (scrubbed to first, not timed), one positive click on each of three people, so the
first click on a frame preprocesses it and the others reuse it. The first click of all (lazy
initialisation) is the warm-up, reported apart. The tiny model's random masks cover half of the
frame or more in scattered pieces: more overlay work than a real person's mask.

``--http`` also times the same kind of click through Gradio's HTTP API on a local server in this
process (`gradio_client`, the ``/add_points`` endpoint, which runs the same handler and returns
JSON instead of the image): what the server and HTTP add on top of the handler.

    .venv/bin/python benchmarks/click_latency.py [--frames-per-video 36] [--clicks 21] [--http]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import headline  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
FPS = Fraction(30)
PEOPLE = 3  # upright boxes walking right; one target each
PERSON_W, PERSON_H = 220, 600
PERSON_STEP_PX = 12  # per frame
FRAME_STEP = 4  # frames between the frames clicked on
BUDGET_MS = 50.0  # issue 15: click to overlay, excluding the network, at 1080p
MS = 1000.0

# Stage names in table order; "other" is the click minus every stage below it.
NETWORK = "network (tracker forward)"
STAGES = (
    NETWORK,
    "frame decode",
    "preprocess to model side",
    "mask upsampling to 1080p",
    "label map of the masks",
    "overlay",
    "click markers",
    "downscale for the browser",
    "JPEG encoding (Gradio)",
)
# The display functions a redraw calls (`body4d.ui.display.show_frame`), by stage.
DISPLAY_STAGES = {
    "labels_to_display": "label map of the masks",
    "masks_to_labels": "label map of the masks",
    "overlay": "overlay",
    "draw_clicks": "click markers",
    "to_display": "downscale for the browser",
}
OTHER = "other (session, prompts)"
# Wall time of every `/add_points` call the server answers (`time_api_handler`), in ms.
HANDLER_MS: list[float] = []


def person_x(k: int, frame: int) -> int:
    """Left edge in pixels of person ``k`` on ``frame``."""
    return 200 + 560 * k + PERSON_STEP_PX * frame


def synthetic_frames(n: int) -> list[np.ndarray]:
    """``n`` RGB 1920x1080 frames: a colour gradient with `PEOPLE` boxes walking right."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    frames = []
    for t in range(n):
        frame = base.copy()
        for k in range(PEOPLE):
            x0 = person_x(k, t)
            frame[300 : 300 + PERSON_H, x0 : x0 + PERSON_W] = (200 - 40 * k, 150, 110 + 50 * k)
        frames.append(frame)
    return frames


class StageTimers:
    """Exclusive wall and CPU time per stage: time inside a nested timed call counts for the inner
    stage only. CPU time is the process's (every thread), which other jobs on the machine do not
    inflate as they inflate wall time."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.cpu_ms: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # per open call: wall and CPU s of the calls nested in it

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([0.0, 0.0])
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
                nested_wall, nested_cpu = self._stack.pop()
                self.ms[stage] += (wall - nested_wall) * MS
                self.cpu_ms[stage] += (cpu - nested_cpu) * MS
                if self._stack:
                    self._stack[-1][0] += wall
                    self._stack[-1][1] += cpu

        return timed

    def take(self) -> tuple[dict[str, float], dict[str, float]]:
        """Wall and CPU ms per stage since the last call."""
        out = dict(self.ms), dict(self.cpu_ms)
        self.ms, self.cpu_ms = defaultdict(float), defaultdict(float)
        return out


def instrument(timers: StageTimers, sam3: Any, frame_widget: Any) -> Callable[[Any], Any]:
    """Wrap the functions a click calls with stage timers; returns the timed Gradio encoder."""
    import body4d.ui.display as display
    from body4d.video import Video

    sam3.tracker.forward = timers.wrap(NETWORK, sam3.tracker.forward)
    Video.frame = timers.wrap("frame decode", Video.frame)
    sam3.tracker_frames = timers.wrap("preprocess to model side", sam3.tracker_frames)
    processor = sam3.tracker_processor
    processor.post_process_masks = timers.wrap("mask upsampling to 1080p", processor.post_process_masks)
    for name, stage in DISPLAY_STAGES.items():
        setattr(display, name, timers.wrap(stage, getattr(display, name)))
    return timers.wrap("JPEG encoding (Gradio)", frame_widget.postprocess)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def clicks_plan(n_clicks: int, n_frames: int) -> list[tuple[int, int]]:
    """``(frame, person)`` per click: each person once on a frame, then the next frame."""
    frames = [(i * FRAME_STEP) % n_frames for i in range(-(-n_clicks // PEOPLE))]
    return [(f, k) for f in frames for k in range(PEOPLE)][:n_clicks]


def click_point(frame: int, person: int) -> tuple[int, int]:
    """The centre of ``person`` on ``frame`` in video pixels."""
    return person_x(person, frame) + PERSON_W // 2, 300 + PERSON_H // 2


def bench_handler(
    events: Any, widgets: Any, request: Any, timers: StageTimers, encode: Callable[[Any], Any], plan: list
) -> list[dict[str, Any]]:
    """One click per ``(frame, person)`` of ``plan``: its total and stage times in ms.

    The first pass over the people creates their targets; later clicks refine them.
    """
    import gradio as gr

    from body4d.ui.display import display_scale

    scale = display_scale(WIDTH, HEIGHT)
    rows = []
    for i, (frame, person) in enumerate(plan):
        if person == 0:
            events.scrub(frame, request)  # the user moves to the frame (its own event, not timed)
        if i < PEOPLE:
            if i:
                events.add_target(request)
        else:
            events.select_target(person + 1, request)
        x, y = click_point(frame, person)
        evt = gr.SelectData(target=None, data={"index": [round(x * scale), round(y * scale)], "value": None})
        timers.take()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = events.click("Positive", evt, request)
        if widgets.frame not in out:
            raise RuntimeError(f"click {i} on frame {frame} was refused: {out[widgets.status]}")
        encode(out[widgets.frame])
        total, cpu = (time.perf_counter() - start) * MS, (time.process_time() - start_cpu) * MS
        stages, cpu_stages = timers.take()
        stages[OTHER] = total - sum(stages.values())
        cpu_stages[OTHER] = cpu - sum(cpu_stages.values())
        rows.append(
            {
                "total": total,
                "cpu": {**cpu_stages, "total": cpu},
                "first on frame": person == 0,
                **stages,
            }
        )
    return rows


def bench_http(demo: Any, clip: Path, plan: list) -> tuple[list[float], list[float]]:
    """The clicks of ``plan`` through ``/add_points`` on a local server: round trips and handler times (ms)."""
    from gradio_client import Client, handle_file

    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict(handle_file(str(clip)), api_name="/open_video")
        round_trip, handler = [], []
        for i, (frame, person) in enumerate(plan):
            x, y = click_point(frame, person)
            start = time.perf_counter()
            client.predict(frame, [[x, y, True]], None if i < PEOPLE else person + 1, api_name="/add_points")
            round_trip.append((time.perf_counter() - start) * MS)
            handler.append(HANDLER_MS.pop())
        return round_trip, handler
    finally:
        demo.close()


def time_api_handler() -> None:
    """Record the wall time of every ``/add_points`` call in `HANDLER_MS` (before `bind_api`)."""
    from body4d.ui.api import ScriptApi

    add_points = ScriptApi.add_points

    @functools.wraps(add_points)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return add_points(*args, **kwargs)
        finally:
            HANDLER_MS.append((time.perf_counter() - start) * MS)

    ScriptApi.add_points = timed


def summary(values: list[float]) -> str:
    return f"{np.median(values):.1f} | {percentile(values, 90):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames-per-video", type=int, default=36, help="frames of the synthetic clip")
    ap.add_argument("--clicks", type=int, default=21, help="timed clicks after the warm-up one")
    ap.add_argument("--http", action="store_true", help="also time clicks through gradio_client")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="click_latency_") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Write the checkpoint and the clip under ``tmp``, time the clicks, print the tables."""
    # Gradio reads its cache folder when imported: keep the JPEGs it writes out of the system's.
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    import torch

    from body4d.checkpoints import checkpoint_report
    from body4d.config import load_config
    from body4d.driver import load_models
    from body4d.session import SessionStore
    from body4d.testing.tiny_sam3 import write_tiny_sam3
    from body4d.ui.api import bind_api
    from body4d.ui.events import UiEvents
    from body4d.ui.layout import build_layout
    from body4d.ui.status import capabilities, layout_spec
    from body4d.video import encode_video

    write_tiny_sam3(tmp / "ckpt")
    cfg = load_config(
        overrides={
            "paths.ckpt_root": str(tmp / "ckpt"),
            "runtime.output_dir": str(tmp / "out"),
            "runtime.device": "cpu",
        },
        env={},
    )
    models = load_models(cfg, sam3=True, detector=False, body=False, camera=False, completion=False)
    report = checkpoint_report(cfg)
    caps = capabilities(cfg, report, segmenter_loaded=True)
    clip = encode_video(synthetic_frames(args.frames_per_video), tmp / "clip_1080p.mp4", FPS)

    if args.http:
        time_api_handler()
    events = UiEvents(cfg, SessionStore(), report, caps, [], models)
    demo, widgets = build_layout(layout_spec(report, caps, []))
    events.bind(demo, widgets)
    bind_api(demo, events)
    timers = StageTimers()
    encode = instrument(timers, models.sam3, widgets.frame)
    request = gr.Request(session_hash="bench")
    events.upload(str(clip), request)
    plan = clicks_plan(args.clicks + 1, args.frames_per_video)
    rows = bench_handler(events, widgets, request, timers, encode, plan)
    warm, timed = rows[0], rows[1:]

    load = os.getloadavg()[0]
    print(
        f"{WIDTH}x{HEIGHT} clip of {args.frames_per_video} frames, tiny SAM-3 on CPU "
        f"({torch.get_num_threads()} torch threads), {len(timed)} clicks after a warm-up; "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    print("\n| stage | median ms | p90 ms | CPU median ms | warm-up ms |\n|---|---|---|---|---|")
    for stage in (*STAGES, OTHER):
        values = [r.get(stage, 0.0) for r in timed]
        cpu = np.median([r["cpu"].get(stage, 0.0) for r in timed])
        print(f"| {stage} | {summary(values)} | {cpu:.1f} | {warm.get(stage, 0.0):.1f} |")
    totals = [r["total"] for r in timed]
    excl = [r["total"] - r.get(NETWORK, 0.0) for r in timed]
    excl_cpu = [r["cpu"]["total"] - r["cpu"].get(NETWORK, 0.0) for r in timed]
    cpu_total = np.median([r["cpu"]["total"] for r in timed])
    print(f"| **click total** | {summary(totals)} | {cpu_total:.1f} | {warm['total']:.1f} |")
    warm_excl = warm["total"] - warm.get(NETWORK, 0.0)
    print(f"| **excluding network** | {summary(excl)} | {np.median(excl_cpu):.1f} | {warm_excl:.1f} |")
    for first, label in ((True, "first click on a frame"), (False, "later clicks on the frame")):
        subset = [r["total"] - r.get(NETWORK, 0.0) for r in timed if r["first on frame"] is first]
        print(f"| excluding network, {label} ({len(subset)}) | {summary(subset)} | |")
    figures = {
        "excl. network median ms": float(np.median(excl)),
        "excl. network p90 ms": percentile(excl, 90),
        "excl. network CPU median ms": float(np.median(excl_cpu)),
        "network median ms": float(np.median([r.get(NETWORK, 0.0) for r in timed])),
        "click median ms": float(np.median(totals)),
    }
    if args.http:
        round_trip, handler = bench_http(demo, clip, plan)
        overhead = [a - b for a, b in zip(round_trip[1:], handler[1:], strict=True)]
        print(f"\nThrough gradio_client /add_points ({len(overhead)} clicks after a warm-up):")
        print("| | median ms | p90 ms |\n|---|---|---|")
        print(f"| round trip | {summary(round_trip[1:])} |")
        print(f"| handler | {summary(handler[1:])} |")
        print(f"| server + HTTP (round trip - handler) | {summary(overhead)} |")
        figures["server+HTTP median ms"] = float(np.median(overhead))
    verdict = "within" if np.median(excl) <= BUDGET_MS else "over"
    print(f"\nexcluding network, median {np.median(excl):.1f} ms: {verdict} the {BUDGET_MS:.0f} ms budget")
    headline("click_latency", figures, note=f"1080p, tiny SAM-3 on CPU, {len(timed)} clicks")


if __name__ == "__main__":
    main()
