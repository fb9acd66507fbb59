"""body4d: temporally consistent 4D human mesh recovery from video (SAM-Body4D rebuilt).

Library use (the same recipe as the app and ``body4d run``)::

    from body4d import RunDir, load_config, load_models, open_video, reconstruct

    cfg = load_config()                       # the shipped config (+ user config, env, overrides)
    models = load_models(cfg)                 # SAM-3, SAM-3D-Body, MoGe-2 on runtime.device
    with open_video("clip.mp4") as video:
        run = RunDir.create(cfg.runtime.output_dir, cfg, input_path="clip.mp4")
        result = reconstruct(video, run, cfg, models)       # -> RunResult (run id, ids, stages)
    bodies = run.load_tracks(RunDir.BODIES)   # {obj_id: BodyTrack} smoothed, with keypoints

Names are imported on first use, so ``import body4d`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from body4d.config import Config, load_config
    from body4d.driver import PipelineModels, load_models, reconstruct
    from body4d.run_dir import RunDir
    from body4d.types import BodyTrack, Click, Prompts, RunResult
    from body4d.video import open_video

_WHERE = {
    "Config": "body4d.config",
    "load_config": "body4d.config",
    "PipelineModels": "body4d.driver",
    "load_models": "body4d.driver",
    "reconstruct": "body4d.driver",
    "RunDir": "body4d.run_dir",
    "BodyTrack": "body4d.types",
    "Click": "body4d.types",
    "Prompts": "body4d.types",
    "RunResult": "body4d.types",
    "open_video": "body4d.video",
}
__all__ = [
    "BodyTrack",
    "Click",
    "Config",
    "PipelineModels",
    "Prompts",
    "RunDir",
    "RunResult",
    "load_config",
    "load_models",
    "open_video",
    "reconstruct",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'body4d' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
