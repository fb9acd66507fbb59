"""Strict loading of SAM-3D-Body checkpoints, including the real (full-size) key layout."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from body4d.testing.tiny_sam3dbody import MARKER, TinyMHR
from models.sam_3d_body.backbone import HUB_PREFIX, hf_to_hub, hub_to_hf
from models.sam_3d_body.checkpoint import check_keys, load_sam3dbody, to_port_state_dict
from models.sam_3d_body.config import RELEASED_MODEL_CONFIG, backbone_config, parse_model_config
from models.sam_3d_body.network import SAM3DBodyNet
from tests.conftest_sam3dbody import reference_modules, tiny_folder  # noqa: F401


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


def test_real_checkpoint_layout_is_accepted(reference_modules: SimpleNamespace, tiny_folder: Path) -> None:  # noqa: F811
    released = _real_reference_state_dict(reference_modules, tiny_folder / "assets" / "mhr_model.pt")
    assert len(released) > 900 and any(k.endswith("attn.qkv.bias_mask") for k in released)
    cfg = parse_model_config(RELEASED_MODEL_CONFIG)
    with torch.device("meta"):
        net = SAM3DBodyNet(cfg)
    mapped = to_port_state_dict(released, cfg)
    check_keys(net, mapped, "real layout")  # raises on any missing/unexpected key or shape
    n_ours = sum(v.numel() for v in net.state_dict().values())
    n_mapped = sum(v.numel() for v in mapped.values())
    assert n_ours == n_mapped
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.93e9 < n_params < 0.95e9  # ~941.5 M learnable weights, as measured on the reference
    # One extra or one missing entry is refused, named.
    with pytest.raises(ValueError, match="unexpected keys.*body.decoder.extra"):
        check_keys(net, {**mapped, "body.decoder.extra": torch.zeros(1)}, "x")
    dropped = dict(mapped)
    dropped.pop("hand.pose_head.keypoint_mapping")
    with pytest.raises(ValueError, match="missing keys.*hand.pose_head.keypoint_mapping"):
        check_keys(net, dropped, "x")


def _files(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "model.ckpt", folder / "model_config.yaml", folder / "assets" / "mhr_model.pt"


def test_tiny_folder_layout(tiny_folder: Path) -> None:  # noqa: F811
    assert (tiny_folder / MARKER).is_file() and (tiny_folder / MARKER).stat().st_size == 0
    ckpt, config, mhr = _files(tiny_folder)
    assert ckpt.is_file() and config.is_file() and mhr.is_file()
    keys = torch.load(ckpt, weights_only=False)["state_dict"].keys()
    assert "backbone.encoder.blocks.0.attn.qkv.weight" in keys and "decoder_hand.norm_final.weight" in keys


def test_tiny_mhr_interface(tiny_folder: Path) -> None:  # noqa: F811
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


def test_loader_rejects_tampered_checkpoint(tiny_folder: Path, tmp_path: Path) -> None:  # noqa: F811
    ckpt, config, mhr = _files(tiny_folder)
    sd = torch.load(ckpt, weights_only=False)["state_dict"]
    sd["surprise.weight"] = torch.zeros(1)
    del sd["head_camera.proj.layers.1.bias"]
    bad = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd}, bad)
    with pytest.raises(ValueError) as err:
        load_sam3dbody(bad, config, mhr)
    assert "surprise.weight" in str(err.value) and "body.camera_head.proj.layers.1.bias" in str(err.value)


def test_loader_missing_files_and_bad_dtype(tiny_folder: Path, tmp_path: Path) -> None:  # noqa: F811
    ckpt, config, mhr = _files(tiny_folder)
    missing = tmp_path / "nope" / "model.ckpt"
    with pytest.raises(FileNotFoundError, match=r"nope/model.ckpt.*scripts/setup.py --ckpt-root DIR"):
        load_sam3dbody(missing, config, mhr)
    with pytest.raises(FileNotFoundError, match="mhr_model"):
        load_sam3dbody(ckpt, config, tmp_path / "mhr_model.pt")
    with pytest.raises(ValueError, match="dtype"):
        load_sam3dbody(ckpt, config, mhr, dtype="int8")


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
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], v) for k, v in ours.items())
    assert torch.equal(hub[HUB_PREFIX + "blocks.0.attn.qkv.bias"][384:768], torch.zeros(384))
    broken = dict(hub)
    broken[HUB_PREFIX + "blocks.0.attn.qkv.bias_mask"] = torch.ones(3 * 384)
    with pytest.raises(ValueError, match="bias_mask"):
        hub_to_hf(broken, cfg)
    broken = dict(hub)
    broken[HUB_PREFIX + "rope_embed.periods"] = hub[HUB_PREFIX + "rope_embed.periods"] * math.e
    with pytest.raises(ValueError, match="RoPE"):
        hub_to_hf(broken, cfg)
    with pytest.raises(KeyError, match="blocks.0.attn.mystery"):
        hub_to_hf({**hub, HUB_PREFIX + "blocks.0.attn.mystery": torch.zeros(1)}, cfg)


def _small_hf_state(cfg: Any) -> dict[str, torch.Tensor]:
    from models.sam_3d_body.backbone import DINOv3Backbone

    torch.manual_seed(0)
    return {f"backbone.{k}": v for k, v in DINOv3Backbone(cfg).state_dict().items()}
