"""Strict loading of SAM-3D-Body checkpoints, including the real (full-size) key layout."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from body4d.testing.tiny_sam3dbody import (
    ABSENT_FROM_RELEASE,
    MARKER,
    SHARED_HEAD_BUFFERS,
    TINY_BACKBONE,
    TinyMHR,
    release_dtype,
    tiny_state_dict,
)
from models.errors import CheckpointError
from models.sam_3d_body import BodyItem
from models.sam_3d_body.backbone import HUB_PREFIX, expected_rope_periods, hf_to_hub, hub_to_hf
from models.sam_3d_body.checkpoint import (
    backbone_dtype,
    check_keys,
    load_sam3dbody,
    to_port_state_dict,
    to_released_state_dict,
)
from models.sam_3d_body.config import RELEASED_MODEL_CONFIG, backbone_config, parse_model_config
from models.sam_3d_body.network import SAM3DBodyNet
from tests.conftest_sam3dbody import load_folder

# The config's crop settings, for direct calls of the loader.
SETTINGS = {"bbox_padding": 1.25, "mask_value": 1}


class _HubLayoutViT(torch.nn.Module):
    """Parameters of torch.hub ``dinov3_vith16plus`` by name and shape only (facebookresearch/
    dinov3 @ 6876159: vision_transformer.py, layers/{block,attention,ffn_layers,layer_scale,
    rope_position_encoding}.py). Forward is never called."""

    def __init__(self) -> None:
        super().__init__()
        d, depth, heads, hidden = 1280, 32, 20, 5120
        p = torch.nn.Parameter
        self.cls_token = p(torch.empty(1, 1, d))
        self.storage_tokens = p(torch.empty(1, 4, d))
        self.mask_token = p(torch.empty(1, d))
        self.patch_embed = torch.nn.Module()
        self.patch_embed.proj = torch.nn.Conv2d(3, d, 16, 16)
        self.rope_embed = torch.nn.Module()
        head_dim = d // heads
        periods = 100.0 ** (2 * torch.arange(head_dim // 4, device="cpu") / (head_dim // 2))
        self.rope_embed.register_buffer("periods", periods)
        self.blocks = torch.nn.ModuleList()
        for _ in range(depth):
            blk = torch.nn.Module()
            blk.norm1, blk.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            blk.attn = torch.nn.Module()
            blk.attn.qkv = torch.nn.Linear(d, 3 * d)
            mask = torch.cat(
                [torch.ones(d, device="cpu"), torch.zeros(d, device="cpu"), torch.ones(d, device="cpu")]
            )
            blk.attn.qkv.register_buffer("bias_mask", mask)
            blk.attn.proj = torch.nn.Linear(d, d)
            blk.ls1, blk.ls2 = torch.nn.Module(), torch.nn.Module()
            blk.ls1.gamma, blk.ls2.gamma = p(torch.empty(d)), p(torch.empty(d))
            blk.mlp = torch.nn.Module()
            blk.mlp.w1, blk.mlp.w2, blk.mlp.w3 = (
                torch.nn.Linear(d, hidden),
                torch.nn.Linear(d, hidden),
                torch.nn.Linear(hidden, d),
            )
            self.blocks.append(blk)
        self.norm = torch.nn.LayerNorm(d)
        self.patch_size, self.embed_dim, self.n_blocks = 16, d, depth


def _real_reference_state_dict(ref: SimpleNamespace, mhr_path: Path) -> dict[str, torch.Tensor]:
    """Every state-dict entry of the reference SAM3DBody at the released config (meta device),
    minus the TorchScript MHR (absent from the released model.ckpt, loaded from mhr_model.pt)."""
    from sam_3d_body.models.backbones import dinov3 as dinov3_mod
    from yacs.config import CfgNode

    def init(self: torch.nn.Module, name: str = "", pretrained_weight: Any = None, cfg: Any = None) -> None:
        torch.nn.Module.__init__(self)
        self.encoder = _HubLayoutViT()
        self.patch_size, self.embed_dim, self.embed_dims = 16, 1280, 1280

    cfg = CfgNode(copy.deepcopy(RELEASED_MODEL_CONFIG), new_allowed=True)
    cfg.MODEL.MHR_HEAD.MHR_MODEL_PATH = str(mhr_path)
    cfg.TRAIN.USE_FP16 = False  # the fp16 cast of the encoder changes dtypes, not keys or shapes
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dinov3_mod.Dinov3Backbone, "__init__", init)
        with torch.device("meta"):
            model = ref.RefModel(cfg)
    return {k: v for k, v in model.state_dict().items() if ".mhr." not in k}


def test_real_checkpoint_layout_is_accepted(reference_modules: SimpleNamespace, tiny_folder: Path) -> None:
    released = _real_reference_state_dict(reference_modules, tiny_folder / "assets" / "mhr_model.pt")
    assert len(released) > 900 and any(k.endswith("attn.qkv.bias_mask") for k in released)
    cfg = parse_model_config(RELEASED_MODEL_CONFIG)
    with torch.device("meta"):
        net = SAM3DBodyNet(cfg)
    mapped = to_port_state_dict(released, cfg)
    check_keys(net, mapped, "real layout")  # raises on any missing/unexpected key or shape
    n_ours = sum(v.numel() for v in net.state_dict().values())
    n_mapped = sum(v.numel() for v in mapped.state_dict.values())
    assert n_ours == n_mapped
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.93e9 < n_params < 0.95e9  # ~941.5 M learnable weights, as measured on the reference
    # One extra or one missing entry is refused, named.
    extra = {**mapped.state_dict, "body.decoder.extra": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected keys.*body.decoder.extra"):
        check_keys(net, dataclasses.replace(mapped, state_dict=extra), "x")
    dropped = dict(mapped.state_dict)
    dropped.pop("hand.pose_head.keypoint_mapping")
    with pytest.raises(ValueError, match="missing keys.*hand.pose_head.keypoint_mapping"):
        check_keys(net, dataclasses.replace(mapped, state_dict=dropped), "x")


def _files(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "model.ckpt", folder / "model_config.yaml", folder / "assets" / "mhr_model.pt"


def test_tiny_folder_layout(tiny_folder: Path) -> None:
    assert (tiny_folder / MARKER).is_file() and (tiny_folder / MARKER).stat().st_size == 0
    ckpt, config, mhr = _files(tiny_folder)
    assert ckpt.is_file() and config.is_file() and mhr.is_file()
    keys = torch.load(ckpt, weights_only=True).keys()
    assert "backbone.encoder.blocks.0.attn.qkv.weight" in keys and "decoder_hand.norm_final.weight" in keys


def test_tiny_mhr_interface(tiny_folder: Path) -> None:
    mhr = torch.jit.load(str(tiny_folder / "assets" / "mhr_model.pt"))
    verts, skel = mhr(torch.zeros(2, 45), torch.zeros(2, 204), torch.zeros(2, 72))
    assert verts.shape == (2, 18439, 3) and skel.shape == (2, 127, 8)
    assert torch.allclose(skel[..., 3:7].norm(dim=-1), torch.ones(2, 127))
    moved, _ = mhr(torch.zeros(2, 45), torch.ones(2, 204), None, False)
    assert (moved - verts).abs().max() > 1.0  # centimetre-scale response to the parameters
    assert torch.equal(
        TinyMHR()(torch.zeros(1, 45), torch.zeros(1, 204))[0],
        TinyMHR()(torch.zeros(1, 45), torch.zeros(1, 204))[0],
    )


def test_loader_rejects_tampered_checkpoint(tiny_folder: Path, tmp_path: Path) -> None:
    ckpt, config, mhr = _files(tiny_folder)
    sd = torch.load(ckpt, weights_only=True)
    sd["surprise.weight"] = torch.zeros(1)
    del sd["head_camera.proj.layers.1.bias"]
    bad = tmp_path / "model.ckpt"
    torch.save(sd, bad)
    with pytest.raises(CheckpointError) as err:
        load_sam3dbody(bad, config, mhr, **SETTINGS)
    assert "surprise.weight" in str(err.value) and "body.camera_head.proj.layers.1.bias" in str(err.value)


def test_loader_missing_files_and_bad_dtype(tiny_folder: Path, tmp_path: Path) -> None:
    ckpt, config, mhr = _files(tiny_folder)
    missing = tmp_path / "nope" / "model.ckpt"
    with pytest.raises(CheckpointError, match=rf"nope/model.ckpt.*scripts/setup.py --ckpt-root {tmp_path}$"):
        load_sam3dbody(missing, config, mhr, **SETTINGS)
    with pytest.raises(CheckpointError, match="mhr_model"):
        load_sam3dbody(ckpt, config, tmp_path / "mhr_model.pt", **SETTINGS)
    with pytest.raises(ValueError, match="dtype"):
        load_sam3dbody(ckpt, config, mhr, dtype="int8", **SETTINGS)
    with pytest.raises(ValueError, match=r"does not run in fp16.*3\.1e4.*Use bf16"):
        load_sam3dbody(ckpt, config, mhr, dtype="fp16", **SETTINGS)
    with pytest.raises(ValueError, match="mask_value"):
        load_sam3dbody(ckpt, config, mhr, **{**SETTINGS, "mask_value": 2})
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage.ckpt is not a readable SAM-3D-Body checkpoint.*setup.py"):
        load_sam3dbody(garbage, config, mhr, **SETTINGS)


def test_unsupported_config_is_refused() -> None:
    raw = yaml.safe_load(yaml.safe_dump(RELEASED_MODEL_CONFIG))
    raw["MODEL"]["DECODER"]["ENABLE_TWOWAY"] = True
    with pytest.raises(ValueError, match="ENABLE_TWOWAY"):
        parse_model_config(raw)
    raw["MODEL"]["DECODER"]["ENABLE_TWOWAY"] = False
    raw["MODEL"]["BACKBONE"]["TYPE"] = "dinov9"
    with pytest.raises(ValueError, match="dinov9"):
        parse_model_config(raw)


def test_backbone_key_map_roundtrip_and_checks() -> None:
    cfg = backbone_config("dinov3_vits16")
    ours = _small_hf_state(cfg)
    hub = hf_to_hub(ours, cfg)
    back = hub_to_hf(hub, cfg)
    assert back.weights.keys() == ours.keys() and not back.problems and not back.filled
    assert all(torch.equal(back.weights[k], v) for k, v in ours.items())
    assert torch.equal(back.rope_periods, hub[HUB_PREFIX + "rope_embed.periods"])
    assert torch.equal(hub[HUB_PREFIX + "blocks.0.attn.qkv.bias"][384:768], torch.zeros(384))
    # Every problem is reported at once, each named.
    broken = dict(hub)
    broken[HUB_PREFIX + "blocks.0.attn.qkv.bias_mask"] = torch.full((3 * 384,), 0.5)
    broken[HUB_PREFIX + "rope_embed.periods"] = hub[HUB_PREFIX + "rope_embed.periods"] * math.e
    broken[HUB_PREFIX + "blocks.0.attn.mystery"] = torch.zeros(1)
    del broken[HUB_PREFIX + "blocks.1.attn.qkv.bias_mask"]
    problems = " | ".join(hub_to_hf(broken, cfg).problems)
    assert "blocks.0.attn.qkv.bias_mask must be 0/1" in problems
    assert "rope_embed.periods does not match RoPE base" in problems
    assert "unmapped backbone key backbone.encoder.blocks.0.attn.mystery" in problems
    assert "missing key backbone.encoder.blocks.1.attn.qkv.bias_mask" in problems


def _small_hf_state(cfg: Any) -> dict[str, torch.Tensor]:
    from models.sam_3d_body.backbone import DINOv3Backbone

    torch.manual_seed(0)
    return {f"backbone.{k}": v for k, v in DINOv3Backbone(cfg).state_dict().items()}


# ------------------------------------------------------------------ the real file's inventory
# Published facts about the released model.ckpt (../shared/research/real-checkpoints.md).
RELEASE_KEYS = 1127
REFERENCE_KEYS = 1130  # what Meta's model class holds; the file lacks ABSENT_FROM_RELEASE
RELEASE_COUNTS = {  # dtype -> (tensors, elements)
    torch.bfloat16: (551, 840_755_216),
    torch.float32: (568, 112_333_138),
    torch.int64: (8, 221_642),
}


def test_full_size_inventory_matches_the_published_file(
    reference_modules: SimpleNamespace,
    tiny_folder: Path,
) -> None:
    """Key set and per-key dtype rule of the full-size architecture (meta device, no weights)
    equal the published inventory: 1,127 keys, 551 bf16 encoder tensors, element counts."""
    cfg = parse_model_config(RELEASED_MODEL_CONFIG)
    with torch.device("meta"):
        net = SAM3DBodyNet(cfg)
        ours = {k: v for k, v in to_released_state_dict(net).items() if k not in ABSENT_FROM_RELEASE}
    assert len(ours) == RELEASE_KEYS
    counts: dict[torch.dtype, list[int]] = {}
    for key, value in ours.items():
        entry = counts.setdefault(release_dtype(key, value), [0, 0])
        entry[0] += 1
        entry[1] += value.numel()
    assert {k: tuple(v) for k, v in counts.items()} == RELEASE_COUNTS
    assert all(
        key.startswith(HUB_PREFIX) for key, v in ours.items() if release_dtype(key, v) == torch.bfloat16
    )
    reference = _real_reference_state_dict(reference_modules, tiny_folder / "assets" / "mhr_model.pt")
    hub_mask_token = "backbone.encoder.mask_token"
    assert len(reference) == REFERENCE_KEYS and hub_mask_token in reference
    assert set(ours) == set(reference) - set(ABSENT_FROM_RELEASE)


def _predict_all(model: Any) -> list[Any]:
    """Body and full estimates of two people with masks and intrinsics (tiny crop size)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), dtype=bool)
    mask[10:90, 20:70] = True
    K = np.array([[150.0, 0.0, 60.0], [0.0, 150.0, 50.0], [0.0, 0.0, 1.0]])
    items = [
        BodyItem(img, np.array([20.0, 10.0, 70.0, 90.0]), mask, K),
        BodyItem(img, np.array([60, 5, 120, 95])),
    ]
    return [e for mode in ("body", "full") for e in model.predict(items, inference_type=mode)]


def _max_gap(a: list[Any], b: list[Any]) -> float:
    return max(float(np.abs(x.vertices - y.vertices).max()) for x, y in zip(a, b, strict=True))


def _write(folder: Path, dst: Path, sd: dict[str, torch.Tensor] | dict[str, Any]) -> Path:
    """A copy of a tiny folder with another model.ckpt."""
    shutil.copytree(folder, dst)
    torch.save(sd, dst / "model.ckpt")
    return dst


def test_tiny_checkpoint_has_the_release_inventory(tiny_folder: Path) -> None:
    sd = torch.load(tiny_folder / "model.ckpt", weights_only=True)
    assert "state_dict" not in sd and not set(ABSENT_FROM_RELEASE) & set(sd)
    assert all(v.dtype == release_dtype(k, v) for k, v in sd.items())
    assert {v.dtype for k, v in sd.items() if k.startswith(HUB_PREFIX)} == {torch.bfloat16}
    masks = [v for k, v in sd.items() if k.endswith("qkv.bias_mask")]
    assert len(masks) == TINY_BACKBONE.num_layers and all(not m.any() for m in masks)
    periods = sd[HUB_PREFIX + "rope_embed.periods"]
    assert periods.dtype == torch.bfloat16
    assert not torch.equal(periods.float(), expected_rope_periods(TINY_BACKBONE))  # really rounded
    for name in SHARED_HEAD_BUFFERS:
        a, b = sd[f"head_pose.{name}"], sd[f"head_pose_hand.{name}"]
        assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr(), name


def test_release_inventory_loads_like_the_equivalent_own_layout(
    tiny_folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The production loader takes the real inventory and gives exactly the outputs of the same
    weights written in our own layout (Lightning-style, fp32, [1,0,1] masks, mask_token)."""
    release = torch.load(tiny_folder / "model.ckpt", weights_only=True)
    own = tiny_state_dict()
    for key, value in own.items():
        if key.startswith(HUB_PREFIX) and value.is_floating_point() and not key.endswith("bias_mask"):
            own[key] = value.to(torch.bfloat16).float()  # the same (bf16-stored) values, in fp32
    own[HUB_PREFIX + "rope_embed.periods"] = release[HUB_PREFIX + "rope_embed.periods"].float()
    own_folder = _write(tiny_folder, tmp_path / "own", {"state_dict": own})
    with caplog.at_level(logging.INFO, logger="models.sam_3d_body.checkpoint"):
        from_release = load_folder(tiny_folder)
    filled = [r for r in caplog.records if "mask_token" in r.getMessage()]
    assert len(filled) == 1 and "filled with zeros" in filled[0].getMessage()
    assert _max_gap(_predict_all(from_release), _predict_all(load_folder(own_folder))) == 0.0
    # The stored (bf16-rounded) periods drive RoPE, in float32.
    inv_freq = from_release.net.backbone.vit.rope_embeddings.inv_freq
    assert inv_freq.dtype == torch.float32
    assert torch.equal(inv_freq, 1.0 / release[HUB_PREFIX + "rope_embed.periods"].float())


def test_bias_mask_is_applied(tiny_folder: Path, tmp_path: Path) -> None:
    """bias x mask: an all-zero mask means no bias whatever is stored; a K bias never matters."""
    base = torch.load(tiny_folder / "model.ckpt", weights_only=True)
    baseline = _predict_all(load_folder(tiny_folder))
    g = torch.Generator().manual_seed(5)
    biased = dict(base)
    for key in [k for k in base if k.endswith("attn.qkv.bias")]:
        biased[key] = torch.randn(base[key].shape, generator=g).to(torch.bfloat16)
    zero_masks = load_folder(_write(tiny_folder, tmp_path / "zero", biased))
    assert _max_gap(_predict_all(zero_masks), baseline) == 0.0
    qv, qkv = dict(biased), dict(biased)
    for key in [k for k in base if k.endswith("bias_mask")]:
        d = base[key].numel() // 3
        qv[key] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)]).to(torch.bfloat16)
        qkv[key] = torch.ones(3 * d, dtype=torch.bfloat16)
    with_qv = _predict_all(load_folder(_write(tiny_folder, tmp_path / "qv", qv)))
    assert _max_gap(with_qv, baseline) > 1e-4  # the q and v biases are used
    with_qkv = _predict_all(load_folder(_write(tiny_folder, tmp_path / "qkv", qkv)))
    assert _max_gap(with_qkv, with_qv) < 1e-5  # softmax cancels a key bias


def test_release_deviations_are_refused_with_the_full_list(tiny_folder: Path, tmp_path: Path) -> None:
    sd = torch.load(tiny_folder / "model.ckpt", weights_only=True)
    sd[HUB_PREFIX + "rope_embed.periods"] = (sd[HUB_PREFIX + "rope_embed.periods"].float() * 10).bfloat16()
    sd[HUB_PREFIX + "blocks.0.attn.qkv.bias_mask"] = torch.full_like(
        sd[HUB_PREFIX + "blocks.0.attn.qkv.bias"], 0.5
    )
    del sd["head_camera.proj.layers.1.bias"]
    sd["surprise.weight"] = torch.zeros(1)
    ckpt, config, mhr = _files(_write(tiny_folder, tmp_path / "bad", sd))
    with pytest.raises(ValueError) as err:
        load_sam3dbody(ckpt, config, mhr, **SETTINGS)
    message = str(err.value)
    for expected in (
        "rope_embed.periods does not match RoPE base",
        "blocks.0.attn.qkv.bias_mask must be 0/1",
        "body.camera_head.proj.layers.1.bias",
        "unexpected keys (1): surprise.weight",
    ):
        assert expected in message, expected


def test_precision_policy(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto = bf16 on bf16-capable CUDA, fp32 elsewhere; a bf16 encoder keeps RoPE in fp32."""
    assert backbone_dtype("auto", "cpu") == "fp32" and backbone_dtype("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert backbone_dtype("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert backbone_dtype("auto", "cuda:1") == "fp32"  # e.g. T4, V100
    monkeypatch.undo()
    half = load_folder(tiny_folder, dtype="bf16")
    assert {p.dtype for p in half.net.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.net.body.parameters()} == {torch.float32}
    assert half.net.backbone.vit.rope_embeddings.inv_freq.dtype == torch.float32
    full = _predict_all(load_folder(tiny_folder))
    gap = _max_gap(_predict_all(half), full)
    assert 0.0 < gap < 0.05 * max(float(np.abs(e.vertices).max()) for e in full)
