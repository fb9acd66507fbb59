"""Tiny random Diffusion-VAS checkpoints in the released Hub folder layout (CPU tests only).

The two released checkpoints, ``kaihuac/diffusion-vas-amodal-segmentation`` and
``kaihuac/diffusion-vas-content-completion``, are folders written by ``DiffusionPipeline.save_pretrained``
of the authors' ``DiffusionVASPipeline`` (a modified Stable Video Diffusion pipeline):

* ``model_index.json``: pipeline class and, per component, ``[library, class]``. The UNet entry names
  the authors' module path ``models.diffusion_vas.unet_diffusion_vas``, so diffusers' generic
  ``DiffusionPipeline.from_pretrained`` cannot load the folder; components load one by one.
* ``unet/``: the SVD-xt ``UNetSpatioTemporalConditionModel`` config (``in_channels`` stays 8) and fp32
  weights with one extra input convolution ``conv_in2`` (12 -> ``block_out_channels[0]``, 3x3), which
  is the one the released forward pass uses; the stock ``conv_in`` (8 channels) is kept but unused.
* ``vae/`` (``AutoencoderKLTemporalDecoder``) and ``image_encoder/`` (``CLIPVisionModelWithProjection``),
  stored in fp16: the training scripts cast both to the mixed-precision dtype before the final
  ``save_pretrained``, and the published folder size (~7.6 GB = fp32 UNet + fp16 CLIP + fp16 VAE)
  fits that (inferred, no Hub access here).
* ``scheduler/`` (the SVD-xt ``EulerDiscreteScheduler`` config) and ``feature_extractor/``
  (``CLIPImageProcessor``, OpenAI CLIP mean/std, 224 px).

We write the same files at tiny sizes (the UNet ~2.9 M parameters) with stock diffusers and
transformers classes plus ``safetensors`` only: nothing of our own UNet code is involved, so the
files test our loader as the real ones would. ``tests/golden/make_vas_golden.py`` checks that the
released ``DiffusionVASPipeline.from_pretrained`` loads them with no missing or unexpected keys and
that its own ``save_pretrained`` writes the same ``model_index.json``. The one difference:
``save_pretrained`` of a pipeline loaded with ``from_pretrained`` also records ``_name_or_path`` (the
load path) in ``model_index.json`` and the unet/vae configs. Its value in the Hub files is unknown
(probably the SVD-xt repo id the training script started from) and loaders ignore it, so we omit it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from models.errors import TINY_MARKER

AMODAL_DIR = "diffusion-vas-amodal-segmentation"
COMPLETION_DIR = "diffusion-vas-content-completion"
# Weights are a pure function of the seed (and the torch version); the two checkpoints differ.
SEEDS = {AMODAL_DIR: 0, COMPLETION_DIR: 1}

# The class name that ``DiffusionVASPipeline.save_pretrained`` writes into model_index.json.
PIPELINE_CLASS = "DiffusionVASPipeline"
# The authors import their UNet as ``models.diffusion_vas.unet_diffusion_vas`` from the repo root;
# diffusers records that module path (not "diffusers") as the UNet's library.
RELEASED_UNET_MODULE = "models.diffusion_vas.unet_diffusion_vas"
UNET_CLASS = "UNetSpatioTemporalConditionModel"
# The extra input conv: [noisy latent 4 | VAE(condition A) 4 | VAE(condition B) 4] channels.
CONV_IN2_CHANNELS = 12

# File names written by save_pretrained (diffusers models, transformers models, configs).
MODEL_INDEX = "model_index.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# Every file of a released folder, relative to it (without our tiny marker).
RELEASED_FILES = (
    MODEL_INDEX,
    "feature_extractor/preprocessor_config.json",
    f"image_encoder/{CONFIG}",
    f"image_encoder/{TRANSFORMERS_WEIGHTS}",
    "scheduler/scheduler_config.json",
    f"unet/{CONFIG}",
    f"unet/{DIFFUSERS_WEIGHTS}",
    f"vae/{CONFIG}",
    f"vae/{DIFFUSERS_WEIGHTS}",
)

# Stable Video Diffusion xt's scheduler (the released folders keep the base model's scheduler):
# EDM-style Euler with v-prediction, Karras sigmas from 700 down to 0.002 and continuous timesteps
# (0.25 ln sigma); the beta schedule is only used to derive the training sigmas.
SVD_XT_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
# OpenAI CLIP normalisation, as in SVD-xt's feature_extractor (the pipeline resizes itself).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CLIP_IMAGE_SIZE = 224

# Tiny widths (real SVD-xt: blocks 320/640/1280/1280, 2 layers, heads 5/10/20/20, cross-attention
# 1024 = CLIP ViT-H projection, addition_time_embed_dim 256, 25 frames). Three added time ids
# (fps-1, motion bucket, noise augmentation) x addition_time_embed_dim = the projection input.
TINY_UNET: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 8,
    "out_channels": 4,
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "num_attention_heads": (2, 2, 4, 4),
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 24,
    "transformer_layers_per_block": 1,
    "num_frames": 8,
}
# Four levels as SVD's VAE (latent = image / 8), 32 channels each (real: 128/256/512/512, 2 layers).
TINY_VAE: dict[str, Any] = {
    "block_out_channels": (32, 32, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
}
# Real: ViT-H/14, 32 layers, hidden 1280, projection 1024. Patch 32 keeps the 224 px input cheap;
# projection_dim must equal the UNet's cross_attention_dim (one CLIP token per frame).
TINY_CLIP: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": CLIP_IMAGE_SIZE,
    "patch_size": 32,
    "projection_dim": TINY_UNET["cross_attention_dim"],
}


def model_index() -> dict[str, Any]:
    """The ``model_index.json`` of a released folder, as the released ``save_pretrained`` writes it.

    ``_diffusers_version`` is the running diffusers version, as ``save_pretrained`` writes it (the Hub
    files were saved by the authors' pinned diffusers 0.29.1; loaders ignore the field).
    """
    return {
        "_class_name": PIPELINE_CLASS,
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": [RELEASED_UNET_MODULE, UNET_CLASS],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }


def _save_weights(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    # The metadata save_pretrained writes; identical tensors give byte-identical files.
    tensors = {name: t.detach().to(dtype).contiguous() for name, t in state.items()}
    save_file(tensors, path, metadata={"format": "pt"})


def _write_components(folder: Path) -> None:
    """Build the three networks from the current RNG state and write their config and weights.

    Weights are written with ``safetensors`` directly (the files ``save_pretrained`` would write):
    the UNet needs the extra ``conv_in2`` tensors, and casting a diffusers model with ``.to()``
    before ``save_pretrained`` logs a misleading warning.
    """
    unet = UNetSpatioTemporalConditionModel(**TINY_UNET)
    conv_in2 = torch.nn.Conv2d(
        CONV_IN2_CHANNELS, TINY_UNET["block_out_channels"][0], kernel_size=3, padding=1
    )
    unet_state = dict(unet.state_dict())
    unet_state.update({f"conv_in2.{name}": t for name, t in conv_in2.state_dict().items()})
    vae = AutoencoderKLTemporalDecoder(**TINY_VAE)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP))

    for sub in ("unet", "vae", "image_encoder"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    unet.save_config(folder / "unet")
    _save_weights(unet_state, folder / "unet" / DIFFUSERS_WEIGHTS, torch.float32)
    vae.save_config(folder / "vae")
    _save_weights(vae.state_dict(), folder / "vae" / DIFFUSERS_WEIGHTS, torch.float16)
    # What save_pretrained of the half-precision model records in its config.
    clip.config.architectures = [type(clip).__name__]
    clip.config.dtype = torch.float16
    clip.config.save_pretrained(folder / "image_encoder")
    _save_weights(clip.state_dict(), folder / "image_encoder" / TRANSFORMERS_WEIGHTS, torch.float16)


def _write_folder(folder: Path, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _write_components(folder)
    EulerDiscreteScheduler.from_config(SVD_XT_SCHEDULER).save_pretrained(folder / "scheduler")
    CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE_SIZE},
        crop_size=CLIP_IMAGE_SIZE,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ).save_pretrained(folder / "feature_extractor")
    (folder / MODEL_INDEX).write_text(json.dumps(model_index(), indent=2, sort_keys=True) + "\n")
    (folder / TINY_MARKER).touch()


def write_tiny_vas(root: Path) -> None:
    """Write ``root/diffusion-vas-amodal-segmentation/`` and ``root/diffusion-vas-content-completion/``.

    Each folder holds `RELEASED_FILES` (tiny random weights, one seed per folder, see `SEEDS`) and the
    tiny marker file. Deterministic: the same torch version writes bit-identical weight files.

    Args:
        root: a checkpoint root (``paths.ckpt_root``); created if missing.
    """
    for name, seed in SEEDS.items():
        _write_folder(Path(root) / name, seed)
