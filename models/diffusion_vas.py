"""Diffusion-VAS adapter: amodal masks and content completion from the two released diffusers folders.

``diffusion-vas-amodal-segmentation/`` and ``diffusion-vas-content-completion/`` are
``DiffusionPipeline.save_pretrained`` folders of the authors' ``DiffusionVASPipeline`` (a modified
Stable Video Diffusion pipeline). ``DiffusionPipeline.from_pretrained`` cannot open them (their
``model_index.json`` names the authors' pipeline class and UNet module), so the components are
loaded one by one, each with a strict key check: ``vae`` (`AutoencoderKLTemporalDecoder`),
``image_encoder`` (`CLIPVisionModelWithProjection`), ``scheduler`` (`EulerDiscreteScheduler`),
``feature_extractor`` (`CLIPImageProcessor`: only its CLIP mean/std are used) and ``unet``
(`VASUNet` below: the stock SVD UNet plus the extra input convolution of the release).

Each call takes two conditioning videos ``(B, F, 3, H, W)`` in [-1, 1] (A feeds the CLIP encoder
and the VAE, B only the VAE) and returns ``(B, F, 3, H, W)`` in [0, 1]:

    amodal segmentation   A = the visible mask (-1/+1), B = depth   -> whole-body mask as RGB
    content completion    A = visible pixels on white, B = amodal mask -> the whole person's RGB

`VASModel.sample` reproduces the released sampling loop (Euler, v-prediction, constant
classifier-free guidance with zeroed conditions, noise-augmented condition latents, chunked
decoding). With ``legacy=True`` (the default) it also keeps the release's two quirks
(../research/vas-depth-moge.md §1.3):

1. CLIP tokens: the release encodes each frame's token as an ``[unconditional, conditional]``
   pair and concatenates the pairs frame-major, while the UNet reads them batch-major; so in each
   guidance branch half the frames see a zero token and the rest see tokens of other frames. The
   published model was sampled that way, so ``legacy`` keeps it; ``legacy=False`` gives each frame
   its own token.
2. Range check: the release re-maps every frame whose minimum is >= 0 by ``2x - 1`` (a deprecated
   image-processor path), which can distort e.g. a depth frame without negative values.

Unlike the release, several targets (rows of B) are sampled in one call with results equal to
separate calls: each row draws its noise from its own `torch.Generator`, its legacy token order
and range check are its own, and its frames are decoded on their own. Videos shorter than
``min_frames`` are padded by repeating their last frame and cropped back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

from models.errors import CheckpointError, format_keys, setup_hint

log = logging.getLogger(__name__)

# The files of a released folder that loading reads (model_index.json only names the parts).
COMPONENT_FILES = {
    "unet": ("config.json", "diffusion_pytorch_model.safetensors"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "image_encoder": ("config.json", "model.safetensors"),
    "scheduler": ("scheduler_config.json",),
    "feature_extractor": ("preprocessor_config.json",),
}
# H and W must be multiples of this (the release's UNet drops the stock odd-size upsampling).
SIZE_MULTIPLE = 64
# The CLIP encoder's input side and the VAE's spatial downsampling.
CLIP_SIZE = 224
LATENT_FACTOR = 8
# The extra input convolution: noisy latent (4) + latent of condition A (4) + of condition B (4).
VAS_IN_CHANNELS = 12


class VASUNet(UNetSpatioTemporalConditionModel):
    """The SVD UNet with the release's 12-channel ``conv_in2`` and one CLIP token per frame.

    The checkpoints keep the stock 8-channel ``conv_in`` (never used) and add ``conv_in2``; the
    config's ``in_channels`` stays 8, so the sampled latent has ``in_channels // 2 = 4`` channels.
    ``encoder_hidden_states`` has one row per (sample, frame): ``(B * F, tokens, dim)``; the stock
    forward instead repeats one row per sample over its frames. H and W must be multiples of 64.
    """

    # diffusers builds the config from the __init__ signature, so it is spelled out.
    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int = 768,
        layers_per_block: int | tuple[int, ...] = 2,
        cross_attention_dim: int | tuple[int, ...] = 1024,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 25,
    ) -> None:
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads,
            num_frames=num_frames,
        )
        self.conv_in2 = torch.nn.Conv2d(VAS_IN_CHANNELS, block_out_channels[0], kernel_size=3, padding=1)

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple[torch.Tensor]:
        """``sample (B, F, 12, h, w)``, scalar ``timestep``, ``encoder_hidden_states (B*F, S, D)``,
        ``added_time_ids (B, 3)`` -> the model output ``(B, F, 4, h, w)``."""
        batch, frames = sample.shape[:2]
        if encoder_hidden_states.shape[0] != batch * frames:
            raise ValueError(
                f"encoder_hidden_states needs one row per sample and frame ({batch * frames}), "
                f"got {encoder_hidden_states.shape[0]}"
            )
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1)[:1].expand(batch)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        time_ids = self.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
        emb = (emb + self.add_embedding(time_ids)).repeat_interleave(frames, dim=0)
        x = self.conv_in2(sample.flatten(0, 1))
        indicator = torch.zeros(batch, frames, dtype=x.dtype, device=x.device)
        cross = {"encoder_hidden_states": encoder_hidden_states}

        skips: tuple[torch.Tensor, ...] = (x,)
        for block in self.down_blocks:
            extra = cross if getattr(block, "has_cross_attention", False) else {}
            x, res = block(hidden_states=x, temb=emb, image_only_indicator=indicator, **extra)
            skips += res
        x = self.mid_block(hidden_states=x, temb=emb, image_only_indicator=indicator, **cross)
        for block in self.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            extra = cross if getattr(block, "has_cross_attention", False) else {}
            x = block(
                hidden_states=x,
                temb=emb,
                res_hidden_states_tuple=res,
                image_only_indicator=indicator,
                **extra,
            )
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        x = x.reshape(batch, frames, *x.shape[1:])
        return UNetSpatioTemporalConditionOutput(sample=x) if return_dict else (x,)


@dataclass(frozen=True)
class SamplingOptions:
    """How `VASModel.sample` samples (the release's values are the defaults).

    Attributes:
        num_inference_steps: Euler steps.
        guidance_scale: constant classifier-free guidance; <= 1 turns the unconditional branch off.
        fps: SVD micro-conditioning; the release passes ``fps - 1``.
        motion_bucket_id: SVD micro-conditioning.
        noise_aug_strength: Gaussian noise added to both condition videos before encoding (and a
            micro-conditioning input).
        decode_chunk_size: latent frames per VAE decode call.
        min_frames: shorter videos are padded to this many frames (the model's temporal context).
        legacy: keep the release's CLIP token order and per-frame range check (module docstring).
    """

    num_inference_steps: int = 25
    guidance_scale: float = 1.5
    fps: int = 8
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int = 8
    min_frames: int = 16
    legacy: bool = True

    @classmethod
    def from_section(cls, section: Any) -> SamplingOptions:
        """The options of a ``completion`` config section (`body4d.config.CompletionConfig`)."""
        return cls(
            num_inference_steps=section.num_inference_steps,
            guidance_scale=section.guidance_scale,
            fps=section.fps,
            motion_bucket_id=section.motion_bucket_id,
            noise_aug_strength=section.noise_aug_strength,
            decode_chunk_size=section.decode_chunk_size,
            min_frames=section.min_frames,
            legacy=section.legacy,
        )

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def sampled_frames(self, frames: int) -> int:
        """Frames the UNet sees for a video of ``frames`` frames (after padding)."""
        return max(frames, self.min_frames)

    def unet_evaluations(self, frames: int) -> int:
        """UNet frame-evaluations of one video: sampled frames x steps x guidance branches."""
        return self.sampled_frames(frames) * self.num_inference_steps * (2 if self.guided else 1)


class VASModel:
    """One loaded Diffusion-VAS pipeline (amodal segmentation or content completion).

    Shared read-only: every `sample` call builds its own scheduler state.
    """

    def __init__(
        self,
        unet: VASUNet,
        vae: Any,
        image_encoder: Any,
        scheduler_config: dict[str, Any],
        clip_mean: tuple[float, float, float],
        clip_std: tuple[float, float, float],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.unet = unet
        self.vae = vae
        self.image_encoder = image_encoder
        self.scheduler_config = scheduler_config
        self.clip_mean = torch.tensor(clip_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(clip_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.device = device
        self.dtype = dtype

    def to(self, device: torch.device | str) -> VASModel:
        """Move the UNet, VAE and CLIP encoder to ``device``, where they then run (GPU memory
        plan: `body4d.memory`).

        Returns:
            This pipeline.
        """
        self.device = torch.device(device)
        for module in (self.unet, self.vae, self.image_encoder):
            module.to(self.device)
        return self

    @torch.inference_mode()
    def sample(
        self,
        cond_a: torch.Tensor,
        cond_b: torch.Tensor,
        generators: list[torch.Generator],
        options: SamplingOptions,
    ) -> torch.Tensor:
        """Sample one output video per row of the conditions.

        Args:
            cond_a: ``(B, F, 3, H, W)`` in [-1, 1]: CLIP and VAE condition.
            cond_b: ``(B, F, 3, H, W)`` in [-1, 1]: VAE condition.
            generators: one CPU generator per row; row ``b``'s result depends only on its own
                conditions and generator (as in a separate call).
            options: sampling settings.

        Returns:
            ``float32 (B, F, 3, H, W)`` in [0, 1] on the CPU.

        Raises:
            ValueError: mismatched shapes, H or W not a multiple of 64, or the wrong number of
                generators.
        """
        from diffusers import EulerDiscreteScheduler

        if cond_a.shape != cond_b.shape or cond_a.ndim != 5 or cond_a.shape[2] != 3:
            raise ValueError(
                f"conditions must both be (B, F, 3, H, W); got {tuple(cond_a.shape)} and {tuple(cond_b.shape)}"
            )
        batch, frames, _, height, width = cond_a.shape
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"Diffusion-VAS needs H and W multiples of {SIZE_MULTIPLE}, got {height}x{width}"
            )
        if len(generators) != batch:
            raise ValueError(f"one generator per row is needed: {batch} rows, {len(generators)} generators")
        total = options.sampled_frames(frames)
        dev, dtype = self.device, self.dtype
        # The conditions' precision, in which the release also draws their noise: float32 as its
        # callers pass them, float64 when the model runs in float64 (exact reference runs).
        cond_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        cond_a, cond_b = (_pad_frames(c.to(cond_dtype), total) for c in (cond_a, cond_b))
        guided = options.guided

        # Noise per row, in the release's order: condition A, condition B, initial latents.
        latent_shape = (
            total,
            self.unet.config.in_channels // 2,
            height // LATENT_FACTOR,
            width // LATENT_FACTOR,
        )
        noise_a, noise_b, latents = [], [], []
        for g in generators:
            noise_a.append(torch.randn((total, 3, height, width), generator=g, dtype=cond_dtype))
            noise_b.append(torch.randn((total, 3, height, width), generator=g, dtype=cond_dtype))
            latents.append(torch.randn(latent_shape, generator=g, dtype=dtype))

        context = self._context(cond_a, guided, options.legacy)
        lat_a = self._condition_latents(cond_a, torch.stack(noise_a), options)
        lat_b = self._condition_latents(cond_b, torch.stack(noise_b), options)
        if guided:
            lat_a = torch.cat([torch.zeros_like(lat_a), lat_a])
            lat_b = torch.cat([torch.zeros_like(lat_b), lat_b])
        time_ids = torch.tensor(
            [[options.fps - 1, options.motion_bucket_id, options.noise_aug_strength]], dtype=dtype, device=dev
        ).repeat(batch * (2 if guided else 1), 1)

        scheduler = EulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(options.num_inference_steps, device=dev)
        lat = torch.stack(latents).to(dev) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = torch.cat([lat, lat]) if guided else lat
            x = torch.cat([scheduler.scale_model_input(x, t), lat_a, lat_b], dim=2)
            out = self.unet(x, t, encoder_hidden_states=context, added_time_ids=time_ids, return_dict=False)[
                0
            ]
            if guided:
                uncond, cond = out.chunk(2)
                out = uncond + options.guidance_scale * (cond - uncond)
            lat = scheduler.step(out, t, lat).prev_sample

        video = torch.stack([self._decode(lat[b], options.decode_chunk_size) for b in range(batch)])
        return (video[:, :frames] * 0.5 + 0.5).clamp(0, 1).cpu()

    def _context(self, cond_a: torch.Tensor, guided: bool, legacy: bool) -> torch.Tensor:
        """CLIP tokens ``(B*F or 2*B*F, 1, D)`` in the UNet's (branch, sample, frame) row order."""
        frames = cond_a.shape[1]
        # One encoder call per frame, as the release makes them (same rounding as its outputs).
        emb = torch.stack([self._clip(cond_a[:, i]) for i in range(frames)], dim=1)[
            :, :, None
        ]  # (B, F, 1, D)
        if not guided:
            return emb.flatten(0, 1)
        if not legacy:
            return torch.cat([torch.zeros_like(emb), emb]).flatten(0, 1)
        # The release: per frame the pair [zero, token], pairs concatenated frame-major (2F rows);
        # the UNet reads the first F rows as the unconditional branch and the last F as the
        # conditional one. Built per row, so a batch equals separate calls.
        rows = torch.stack([torch.zeros_like(emb), emb], dim=2).flatten(1, 2)  # (B, 2F, 1, D)
        return torch.cat([rows[:, :frames], rows[:, frames:]]).flatten(0, 1)

    def _clip(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> ``(N, D)`` image embeddings (SVD's preprocessing)."""
        x = (_resize_antialiased(frames.to(self.device), CLIP_SIZE) + 1.0) / 2.0
        # The release normalises with its CLIPImageProcessor, which works in float32 whatever the
        # input precision (transformers 5); so does this, also in a float64 run.
        x = (x.float() - self.clip_mean.to(x.device)) / self.clip_std.to(x.device)
        return self.image_encoder(pixel_values=x.to(self.image_encoder.dtype)).image_embeds.to(self.dtype)

    def _condition_latents(
        self, cond: torch.Tensor, noise: torch.Tensor, options: SamplingOptions
    ) -> torch.Tensor:
        """Noise-augmented condition video -> the unscaled mode of its VAE posterior ``(B, F, 4, h, w)``."""
        if options.legacy:
            low = cond.amin(dim=(2, 3, 4), keepdim=True)
            cond = torch.where(low >= 0, cond * 2.0 - 1.0, cond)
        x = cond + options.noise_aug_strength * noise
        # One encoder call per frame (all rows), as the release makes them.
        parts = [
            self.vae.encode(x[:, i].to(self.device, self.vae.dtype)).latent_dist.mode()
            for i in range(x.shape[1])
        ]
        return torch.stack(parts, dim=1).to(self.dtype)

    def _decode(self, lat: torch.Tensor, chunk: int) -> torch.Tensor:
        """One row's latents ``(F, 4, h, w)`` -> frames ``(F, 3, H, W)`` in [-1, 1]."""
        z = lat / self.vae.config.scaling_factor
        parts = []
        for i in range(0, len(z), chunk):
            part = z[i : i + chunk].to(self.vae.dtype)
            parts.append(self.vae.decode(part, num_frames=len(part)).sample.float())
        return torch.cat(parts)


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a Diffusion-VAS folder the adapter can open, or None when it looks complete.

    Only presence is checked (cheap enough for a status panel); `load` reads the content.
    """
    path = Path(path)
    if not path.is_dir():
        return "not found" if not path.exists() else "not a folder"
    if not (path / "model_index.json").is_file():
        return "no model_index.json (not a diffusers pipeline folder, or an interrupted download?)"
    for part, names in COMPONENT_FILES.items():
        for name in names:
            file = path / part / name
            if not file.is_file() or file.stat().st_size == 0:
                return f"{part}/{name} is missing or empty (an interrupted download?)"
    return None


def load(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> VASModel:
    """Load one released Diffusion-VAS folder, every component with a strict key check.

    Args:
        path: the folder (``diffusion-vas-amodal-segmentation`` or ``-content-completion``).
        device: where the networks run.
        dtype: weight precision of the UNet and CLIP encoder; the VAE runs in fp32 when fp16 is
            asked (SVD's VAE overflows in fp16), else in ``dtype``.

    Raises:
        CheckpointError: a part is missing or does not fit its class (names the keys and the fix).
    """
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    path = Path(path)
    fix = f"run `{setup_hint(path.parent)} --with-completion` to download it"
    problem = folder_problem(path)
    if problem is not None:
        raise CheckpointError(path, f"Diffusion-VAS folder {path}: {problem}; {fix}")
    device = torch.device(device)
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    common = {"local_files_only": True, "output_loading_info": True}
    quiet = {"low_cpu_mem_usage": False}  # without `accelerate` diffusers warns, then does this anyway
    unet = _strict(
        path,
        "unet",
        fix,
        lambda: VASUNet.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **common, **quiet),
    )
    vae = _strict(
        path,
        "vae",
        fix,
        lambda: AutoencoderKLTemporalDecoder.from_pretrained(
            path, subfolder="vae", torch_dtype=vae_dtype, **common, **quiet
        ),
    )
    encoder = _strict(
        path,
        "image_encoder",
        fix,
        lambda: CLIPVisionModelWithProjection.from_pretrained(
            path, subfolder="image_encoder", dtype=dtype, **common
        ),
    )
    try:
        processor = CLIPImageProcessor.from_pretrained(
            path, subfolder="feature_extractor", local_files_only=True
        )
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            path, f"{path}: cannot read the feature extractor or scheduler ({exc}); {fix}"
        ) from exc
    if scheduler_config.get("_class_name", "EulerDiscreteScheduler") != "EulerDiscreteScheduler":
        raise CheckpointError(
            path,
            f"{path}/scheduler is a {scheduler_config['_class_name']}, not an EulerDiscreteScheduler; {fix}",
        )
    if encoder.config.projection_dim != unet.config.cross_attention_dim:
        raise CheckpointError(
            path,
            f"{path}: the image encoder's projection ({encoder.config.projection_dim}) does not match the "
            f"UNet's cross-attention width ({unet.config.cross_attention_dim}); {fix}",
        )
    model = VASModel(
        unet.to(device).eval(),
        vae.to(device).eval(),
        encoder.to(device).eval(),
        scheduler_config,
        tuple(processor.image_mean),
        tuple(processor.image_std),
        device,
        dtype,
    )
    log.info("Loaded Diffusion-VAS from %s on %s (%s)", path, device, dtype)
    return model


def _strict(path: Path, part: str, fix: str, build: Any) -> Any:
    """Run a ``from_pretrained(..., output_loading_info=True)`` and refuse any key problem."""
    try:
        model, info = build()
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"{path}/{part} cannot be loaded ({exc}); {fix}") from exc
    problems = [
        f"{what} {format_keys([str(k) for k in info.get(key) or []])}"
        for key, what in (
            ("missing_keys", "missing keys"),
            ("unexpected_keys", "unexpected keys"),
            ("mismatched_keys", "mismatched shapes"),
        )
        if info.get(key)
    ]
    if info.get("error_msgs"):
        problems.append("; ".join(str(m) for m in info["error_msgs"]))
    if problems:
        raise CheckpointError(path, f"{path}/{part} does not match its model: {'; '.join(problems)}; {fix}")
    return model


def _pad_frames(video: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, F, ...)`` padded to ``frames`` along F by repeating the last frame."""
    missing = frames - video.shape[1]
    if missing <= 0:
        return video
    return torch.cat([video, video[:, -1:].expand(-1, missing, *video.shape[2:])], dim=1)


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _resize_antialiased(x: torch.Tensor, side: int) -> torch.Tensor:
    """SVD's CLIP resize: a Gaussian blur sized to the downscale, then bicubic (align_corners)."""
    height, width = x.shape[-2:]
    sigmas = [max((s / side - 1.0) / 2.0, 0.001) for s in (height, width)]
    sizes = [int(max(2.0 * 2 * s, 3)) for s in sigmas]
    sizes = [k + (k % 2 == 0) for k in sizes]
    channels = x.shape[1]
    ky = _gaussian(sizes[0], sigmas[0]).to(x).view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    kx = _gaussian(sizes[1], sigmas[1]).to(x).view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    px, py = sizes[1] - 1, sizes[0] - 1
    x = F.conv2d(F.pad(x, (px // 2, px - px // 2, 0, 0), mode="reflect"), kx, groups=channels)
    x = F.conv2d(F.pad(x, (0, 0, py // 2, py - py // 2), mode="reflect"), ky, groups=channels)
    return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=True)
