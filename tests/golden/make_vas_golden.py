"""Record what the RELEASED Diffusion-VAS pipeline outputs on our tiny checkpoints (run by hand).

    python tests/golden/make_vas_golden.py --released /tmp/diffusion-vas --out tests/golden/vas_tiny.pt

``--released`` is an export of https://github.com/Kaihua-Chen/diffusion-vas (never vendored here).
Only ``models/diffusion_vas/`` is needed; from a bare mirror (whose large assets may be absent, so a
whole-tree ``git archive`` fails) export that subtree::

    git --git-dir=<mirror> archive --prefix=models/diffusion_vas/ HEAD:models/diffusion_vas \\
        | tar -x -C /tmp/diffusion-vas

The commit is read with ``git -C <released> rev-parse HEAD`` when ``--released`` is a clone; pass
``--commit`` otherwise. The golden was made from ``bbea113b6a09ebd1a7a764142d391262eac576c2``.

What it does:

1. writes both tiny folders (`body4d.testing.tiny_vas.write_tiny_vas`) and a synthetic 4-frame
   64x64 clip to a temporary folder;
2. runs the released code in a SUBPROCESS. The authors import their code as the top-level package
   ``models`` (``models.diffusion_vas.*``, also the UNet path in ``model_index.json``), which clashes
   with our own ``models`` package (installed in editable mode). The worker process is started
   with the released root as its working directory, never imports body4d, and binds ``models`` in
   ``sys.modules`` to a namespace package over ``<released>/models`` before importing anything, then
   asserts that the pipeline and UNet modules were loaded from there;
3. the worker loads both folders with the released ``DiffusionVASPipeline.from_pretrained`` and each
   component with ``output_loading_info`` (no missing/unexpected keys allowed), re-saves the pipeline
   with the released ``save_pretrained`` and compares the written ``model_index.json`` and file set,
   then calls the pipeline with the release's arguments for both checkpoints, recording every
   ``torch.randn`` draw (shape, generator, caller, SHA-256 of the values) and the warnings;
4. the worker also tries one call with two targets (B=2) and records what happens;
5. everything lands in one torch file (< 1.5 MB) read by the tests of our own sampling loop.

Why float64 and step latents: on these tiny random weights the 25-step sampling trajectory is
chaotic (the product of the steps' Jacobians is ~1e8-1e12), so one rounding difference grows to
~0.05 in the output. A float32 free run therefore only reproduces on the CPU kernels and thread
count it was recorded with (format 1 of this file: recorded on the CI machine, it missed by 0.038 on
an AVX-512 machine with 2 threads; changing only the thread count there moved it by 0.042), and
even float64 does not cure a free run (diffusers' Euler step rounds its input sample to float32).
So both pipelines are loaded in float64 (``dtype=DTYPE``; inputs cast to it, so the release draws
its condition noise in float64 too, as our loop does for a float64 model) and the worker also
records the latents after every step (``callback_on_step_end``, the release's own hook): the test
runs our loop with the released latents put back after each step, so each comparison covers one
UNet evaluation and one scheduler step (per-step differences ~1e-13 across machines).

Inputs are stored as float16 (every value is exactly representable; checked) to keep the file small:
cast them to float32 before use. Outputs are float32 in [0, 1], shape (B, F, 3, H, W) (the release decodes in float64 and casts);
``step_latents[name]`` is float64 (steps, B, F, 4, H/8, W/8). The file
holds only tensors and plain Python values: ``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

log = logging.getLogger("make_vas_golden")

FORMAT = 2
# The precision of the released run (and of the test's runs of our loop): see "Why float64 and
# step latents" in the module docstring.
DTYPE = torch.float64
# The released callers' arguments (demo.py / SAM-Body4D) at the tiny clip's size.
FRAMES, HEIGHT, WIDTH = 4, 64, 64
SEED = 23
CALL_KWARGS: dict[str, Any] = {
    "height": HEIGHT,
    "width": WIDTH,
    "num_frames": FRAMES,
    "decode_chunk_size": 8,
    "motion_bucket_id": 127,
    "fps": 8,
    "noise_aug_strength": 0.02,
    "min_guidance_scale": 1.5,
    "max_guidance_scale": 1.5,
    "num_inference_steps": 25,
    "output_type": "pt",
}
# Which clip tensors are condition A (CLIP + VAE) and condition B (VAE only) of each checkpoint.
CONDITIONS = {"amodal": ("modal_mask", "depth"), "completion": ("modal_rgb", "amodal_mask")}
# Depth values are multiples of this step, so that float16 stores them exactly.
DEPTH_STEP = 2.0**-9
# The draws the released __call__ makes from its generator, in order (checked when recording):
# noise augmentation of condition A and of condition B, each in the (F, B, 3, H, W) layout of the
# stacked per-frame slices, then the initial latents (1, F, 4, H/8, W/8) in prepare_latents.
DRAW_ROLES = ("noise_aug_a", "noise_aug_b", "initial_latents")
RELEASED_FILES = (
    "models/diffusion_vas/pipeline_diffusion_vas.py",
    "models/diffusion_vas/unet_diffusion_vas.py",
)


# ---------------------------------------------------------------- the synthetic clip (parent side)
def make_clip() -> dict[str, torch.Tensor]:
    """A box moving right whose middle is hidden by a vertical occluder on every frame.

    Returns float32 tensors of shape (1, F, 3, H, W) in [-1, 1]:
        modal_mask: visible part of the box, -1/+1, one channel repeated x3;
        amodal_mask: the whole box, -1/+1 x3 (contains the modal mask);
        depth: disparity-like (larger = nearer) x3, min-max scaled over the clip. The scene moves
            closer over time, so the last frame's minimum is >= 0 and the released per-frame range
            check rescales that frame (quirk 2 of the research notes);
        modal_rgb: the striped box's visible pixels on a white (+1) background.
    """
    yy, xx = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    modal, amodal, disparity, rgb = [], [], [], []
    for f in range(FRAMES):
        x0 = 8 + 6 * f
        box = (yy >= 16) & (yy < 48) & (xx >= x0) & (xx < x0 + 28)
        occluder = (xx >= 28) & (xx < 40)
        visible = box & ~occluder
        modal.append(visible)
        amodal.append(box)
        disparity.append(0.4 * yy / HEIGHT + 0.3 * box + 0.5 * occluder + 0.4 * f)
        stripes = (yy // 4) % 2 == 0
        colour = torch.where(
            stripes,
            torch.tensor([0.75, -0.5, -0.5])[:, None, None],
            torch.tensor([0.25, -0.75, 0.5])[:, None, None],
        )
        rgb.append(torch.where(visible, colour, torch.ones(3, 1, 1)))

    def as_video(frames: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(frames).float()
        return (x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x)[None].contiguous()

    d = torch.stack(disparity).float()
    d = (d - d.min()) / (d.max() - d.min()) * 2 - 1
    d = (d / DEPTH_STEP).round() * DEPTH_STEP
    return {
        "modal_mask": as_video(modal) * 2 - 1,
        "amodal_mask": as_video(amodal) * 2 - 1,
        "depth": as_video(list(d)),
        "modal_rgb": as_video(rgb),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _released_commit(released: Path, commit: str | None) -> str:
    if commit:
        return commit
    r = subprocess.run(["git", "-C", str(released), "rev-parse", "HEAD"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{released} is not a git clone: pass the exported commit with --commit")
    return r.stdout.strip()


def make_golden(released: Path, out: Path, commit: str | None) -> dict[str, Any]:
    """Write the tiny folders and the clip, run the released pipeline in a subprocess, save ``out``."""
    # Imported here: the worker process must not import body4d (nor our ``models`` package).
    from body4d.testing import tiny_vas

    released = released.resolve()
    for rel in RELEASED_FILES:
        if not (released / rel).is_file():
            raise SystemExit(f"{released / rel} is missing: export the released repository (see --help)")
    commit = _released_commit(released, commit)
    clip = make_clip()
    for name, x in clip.items():
        if not torch.equal(x.half().float(), x):
            raise AssertionError(f"input {name} is not exactly representable in float16")

    with tempfile.TemporaryDirectory(prefix="vas_golden_") as tmp:
        work = Path(tmp)
        tiny_vas.write_tiny_vas(work / "ckpt")
        folders = {
            "amodal": work / "ckpt" / tiny_vas.AMODAL_DIR,
            "completion": work / "ckpt" / tiny_vas.COMPLETION_DIR,
        }
        torch.save({"clip": clip, "folders": {k: str(v) for k, v in folders.items()}}, work / "inputs.pt")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(work),
            "--released",
            str(released),
        ]
        subprocess.run(cmd, cwd=released, env=env, check=True)
        result = torch.load(work / "released.pt", weights_only=False)
        checkpoint_sha256 = {
            f"{folder.name}/{rel}": _sha256(folder / rel)
            for folder in folders.values()
            for rel in tiny_vas.RELEASED_FILES
        }

    golden = {
        "format": FORMAT,
        "inputs": {k: v.half() for k, v in clip.items()},
        "conditions": {k: list(v) for k, v in CONDITIONS.items()},
        "call_kwargs": dict(CALL_KWARGS),
        "seed": SEED,
        "dtype": str(DTYPE).removeprefix("torch."),
        "released_commit": commit,
        "released_sha256": {rel: _sha256(released / rel) for rel in RELEASED_FILES},
        "checkpoint_sha256": checkpoint_sha256,
        "versions": {
            **result.pop("versions"),
            "python": platform.python_version(),
        },
        **result,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(golden, out)
    return golden


# ---------------------------------------------------------------- the worker (released code only)
def _bind_released_models(released: Path) -> None:
    """Make ``models`` the authors' namespace package, whatever else is installed under that name."""
    spec = importlib.machinery.ModuleSpec("models", None, is_package=True)
    spec.submodule_search_locations = [str(released / "models")]
    sys.modules["models"] = importlib.util.module_from_spec(spec)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _record_logs() -> Iterator[list[str]]:
    """Collect warnings (Python and diffusers/transformers logging) raised inside the block."""
    handler = _ListHandler()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for lg in loggers:
        lg.addHandler(handler)
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
            found = [f"{w.category.__name__}: {w.message}" for w in caught] + handler.messages
            # One entry per distinct message start (the range warnings differ only in their numbers).
            seen: dict[str, str] = {}
            for m in found:
                seen.setdefault(m[:60], " ".join(m.split())[:300])
            messages.extend(seen.values())


@contextmanager
def _record_randn(call_generator: torch.Generator) -> Iterator[list[dict[str, Any]]]:
    """Record every ``torch.randn`` call: shape, dtype, generator, calling function, value hash.

    ``generator`` is "call" for the generator passed to the pipeline, "default" for none (torch's
    global generator, which is also the call's when it comes from ``torch.manual_seed``).
    """
    draws: list[dict[str, Any]] = []
    original: Callable[..., torch.Tensor] = torch.randn

    def randn(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = original(*args, **kwargs)
        gen = kwargs.get("generator")
        frame = sys._getframe(2)  # randn_tensor's caller (the pipeline or the scheduler)
        draws.append(
            {
                "shape": tuple(out.shape),
                "dtype": str(out.dtype).removeprefix("torch."),
                "generator": "call" if gen is call_generator else ("default" if gen is None else "other"),
                "caller": f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}",
                "sha256": hashlib.sha256(out.contiguous().numpy().tobytes()).hexdigest(),
            }
        )
        return out

    torch.randn = randn
    try:
        yield draws
    finally:
        torch.randn = original


def _loading_info(info: dict[str, Any]) -> dict[str, list[str]]:
    return {
        k: sorted(map(str, info.get(k) or [])) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }


def _check_components(folder: Path, unet_cls: type) -> dict[str, dict[str, list[str]]]:
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionModelWithProjection

    infos = {}
    for name, cls in (
        ("unet", unet_cls),
        ("vae", AutoencoderKLTemporalDecoder),
        ("image_encoder", CLIPVisionModelWithProjection),
    ):
        _, info = cls.from_pretrained(folder, subfolder=name, output_loading_info=True)
        infos[name] = _loading_info(info)
        bad = {k: v for k, v in infos[name].items() if v}
        if bad:
            raise AssertionError(f"released loading of {folder / name} reports {bad}")
    return infos


def _resave(pipe: Any, folder: Path, dest: Path) -> dict[str, Any]:
    """Save the loaded pipeline with the released save_pretrained and compare it with ``folder``."""
    pipe.save_pretrained(dest)

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    # Top-level files other than model_index.json are not save_pretrained's (our tiny marker).
    ours = [f for f in files(folder) if "/" in f or f == "model_index.json"]
    theirs = files(dest)
    json_diffs = {}
    for rel in theirs:
        if rel.endswith(".json") and (folder / rel).is_file():
            a, b = json.loads((folder / rel).read_text()), json.loads((dest / rel).read_text())
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            if diff:
                json_diffs[rel] = diff
    dtypes = {}
    for rel in theirs:
        if rel.endswith(".safetensors"):
            with safe_open(dest / rel, "pt") as f:
                names = f.keys()
                dtypes[rel] = sorted({str(f.get_slice(k).get_dtype()) for k in names})
    # save_pretrained also records the path the pipeline was loaded from, which is ours to choose.
    written = json.loads((dest / "model_index.json").read_text())
    written.pop("_name_or_path", None)
    as_diffusers_writes = json.dumps(written, indent=2, sort_keys=True) + "\n"
    return {
        "weight_dtypes_written": dtypes,
        "model_index_written": json.loads((dest / "model_index.json").read_text()),
        "model_index_equal_but_name_or_path": as_diffusers_writes
        == (folder / "model_index.json").read_text(),
        "file_set_equal": ours == theirs,
        "files_written": theirs,
        "json_keys_differing": json_diffs,
    }


def _run(
    pipe: Any, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]], list[str]]:
    """One released call in `DTYPE`: output frames, the latents after every step, draws, warnings."""
    # As the released callers: torch.manual_seed returns the (re-seeded) global default generator.
    generator = torch.manual_seed(SEED)
    steps: list[torch.Tensor] = []

    def after_step(_pipe: Any, _i: int, _t: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        steps.append(tensors["latents"].detach().clone())
        return {}  # the latents are left as they are

    with _record_logs() as messages, _record_randn(generator) as draws:
        frames = pipe(
            a.to(DTYPE),
            b.to(DTYPE),
            generator=generator,
            callback_on_step_end=after_step,
            callback_on_step_end_tensor_inputs=["latents"],
            **CALL_KWARGS,
        ).frames
    from_call = [d for d in draws if d["generator"] == "call"]
    if len(from_call) != len(DRAW_ROLES):
        raise AssertionError(f"expected {len(DRAW_ROLES)} draws from the call generator, got {draws}")
    for d, role in zip(from_call, DRAW_ROLES, strict=True):
        d["role"] = role
    return frames.float(), torch.stack(steps), draws, messages


def _reproduces(draws: list[dict[str, Any]]) -> bool:
    """Do a private generator's draws, in the recorded order, give the recorded values?"""
    gen = torch.Generator().manual_seed(SEED)
    for d in draws:
        if d["generator"] == "other":
            continue
        # "default" draws (none were seen) consume the same stream: the call's generator is global.
        x = torch.randn(d["shape"], generator=gen, dtype=getattr(torch, d["dtype"]))
        if hashlib.sha256(x.numpy().tobytes()).hexdigest() != d["sha256"]:
            return False
    return True


def worker(work: Path, released: Path) -> None:
    """Run the released pipeline on the folders and clip in ``work``; write ``work/released.pt``."""
    _bind_released_models(released)
    import diffusers
    import transformers

    from models.diffusion_vas import pipeline_diffusion_vas, unet_diffusion_vas

    for module in (pipeline_diffusion_vas, unet_diffusion_vas):
        if not Path(module.__file__).resolve().is_relative_to(released):
            raise AssertionError(
                f"{module.__name__} was imported from {module.__file__}, not from {released}"
            )
    pipeline_cls = pipeline_diffusion_vas.DiffusionVASPipeline

    data = torch.load(work / "inputs.pt", weights_only=False)
    clip, folders = data["clip"], {k: Path(v) for k, v in data["folders"].items()}
    result: dict[str, Any] = {"outputs": {}, "noise_draws": {}, "warnings": {}, "loading": {}}

    # Loading without a dtype: diffusers keeps fp32, transformers 5 keeps the checkpoint's fp16.
    with _record_logs():
        plain = pipeline_cls.from_pretrained(folders["amodal"])
    plain.set_progress_bar_config(disable=True)
    no_dtype: dict[str, Any] = {
        "dtypes": {n: str(getattr(plain, n).dtype) for n in ("unet", "vae", "image_encoder")}
    }
    try:
        with _record_logs():
            plain(
                clip["modal_mask"],
                clip["depth"],
                generator=torch.manual_seed(SEED),
                **{**CALL_KWARGS, "num_inference_steps": 1},
            )
        no_dtype["call"] = "ok"
    except Exception as e:  # recorded: the point is what happens
        no_dtype["call"] = f"{type(e).__name__}: {e}"
    result["no_dtype_load"] = no_dtype

    pipes = {}
    for name, folder in folders.items():
        with _record_logs() as messages:
            pipes[name] = pipeline_cls.from_pretrained(folder, dtype=DTYPE)
            result["loading"][name] = _check_components(
                folder, unet_diffusion_vas.UNetSpatioTemporalConditionModel
            )
        result["warnings"][f"load_{name}"] = messages
        if type(pipes[name].unet) is not unet_diffusion_vas.UNetSpatioTemporalConditionModel:
            raise AssertionError(f"{folder} loaded its UNet as {type(pipes[name].unet)}")
        pipes[name].set_progress_bar_config(disable=True)
    # Re-save the pipeline loaded as a user would (no dtype) with the released save_pretrained.
    with tempfile.TemporaryDirectory() as dest:
        result["resave"] = _resave(plain, folders["amodal"], Path(dest))

    for name, (ka, kb) in CONDITIONS.items():
        frames, steps, draws, messages = _run(pipes[name], clip[ka], clip[kb])
        result["outputs"][name] = frames
        result.setdefault("step_latents", {})[name] = steps
        result["noise_draws"][name] = draws
        result["warnings"][name] = messages
        result.setdefault("draws_reproduced_by_private_generator", {})[name] = _reproduces(draws)
    # Which frame slices the released VaeImageProcessor.preprocess rescales with 2x-1 (min >= 0).
    result["range_fix_frames"] = {
        k: [f for f in range(FRAMES) if float(v[:, f].min()) >= 0] for k, v in clip.items()
    }

    batch2: dict[str, Any] = {
        "rule": "target 0 = the clip, target 1 = the clip flipped left-right (x.flip(-1))"
    }
    a, b = (torch.cat([clip[k], clip[k].flip(-1)]) for k in CONDITIONS["amodal"])
    try:
        frames, _, draws, _ = _run(pipes["amodal"], a, b)
        batch2.update(accepted=True, output=frames, noise_draws=draws)
    except Exception as e:  # recorded: the point is what happens
        batch2.update(accepted=False, error=f"{type(e).__name__}: {e}")
    result["batch2_amodal"] = batch2
    result["versions"] = {
        "torch": str(torch.__version__),
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    torch.save(result, work / "released.pt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument(
        "--released", type=Path, required=True, help="root of the exported diffusion-vas repository"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("vas_tiny.pt"))
    ap.add_argument("--commit", help="the released commit (read with git when --released is a clone)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.released.resolve())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    golden = make_golden(args.released, args.out, args.commit)
    log.info("wrote %s (%.0f kB)", args.out, args.out.stat().st_size / 1024)
    for name, draws in golden["noise_draws"].items():
        call = [(d["shape"], d["caller"]) for d in draws if d["generator"] == "call"]
        log.info(
            "%s: %d draws from the call generator %s, %d without a generator",
            name,
            len(call),
            call,
            len(draws) - len(call),
        )
    log.info("batch of 2 accepted: %s", golden["batch2_amodal"]["accepted"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
