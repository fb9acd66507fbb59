"""SAM-3D-Body port: FLOPs per crop at the released size (meta device) and CPU ms at tiny size.

Usage: python benchmarks/sam3dbody_bench.py
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import headline
from torch.utils.flop_counter import FlopCounterMode

from body4d.testing.tiny_sam3dbody import FOLDER, TinyMHR, write_tiny_sam3dbody
from models.sam_3d_body import BodyItem, load_sam3dbody
from models.sam_3d_body.config import RELEASED_MODEL_CONFIG, backbone_config, parse_model_config
from models.sam_3d_body.network import CropBatch, SAM3DBodyNet
from models.sam_3d_body.preprocess import crop_rays

log = logging.getLogger("sam3dbody_bench")


def _crops(n: int, size: int, device: torch.device) -> CropBatch:
    K = torch.tensor([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]], device=device).expand(n, 3, 3)
    affine = torch.tensor([[1.0, 0, -300], [0, 1.0, -100]], device=device).expand(n, 2, 3)
    return CropBatch(
        box_center=torch.full((n, 2), 400.0, device=device),
        box_size=torch.full((n,), float(size), device=device),
        K=K,
        affine=affine,
        rays=crop_rays(affine, K, size),
        crop_size=size,
    )


def flops_per_crop() -> dict[str, float]:
    """TFLOP per person for the released architecture (MHR itself excluded: a stand-in runs)."""
    cfg = parse_model_config(RELEASED_MODEL_CONFIG, backbone_config("dinov3_vith16plus"))
    meta = torch.device("meta")
    with meta:
        net = SAM3DBodyNet(cfg).eval()
    # Built on the CPU and then moved: its skeleton tree is plain ints (sampled when built, listed
    # in forward kinematics), which meta tensors do not hold, so the parents stay on the CPU.
    mhr = TinyMHR()
    parents = mhr.character_torch.skeleton.joint_parents
    mhr = mhr.to(meta)
    mhr.character_torch.skeleton.joint_parents = parents
    s = cfg.image_size
    out: dict[str, float] = {}
    with torch.inference_mode():
        img = torch.zeros(1, 3, s, s, device=meta)
        mask = torch.zeros(1, 1, s, s, device=meta)
        has = torch.zeros(1, dtype=torch.bool, device=meta)
        prompt1 = torch.tensor([[[0.0, 0.0, -2.0]]], device=meta)
        with FlopCounterMode(display=False) as fc:
            feats = net.encode(img, mask, has)
        out["backbone"] = fc.get_total_flops() / 1e12
        with FlopCounterMode(display=False) as fc:
            net.decode(net.body, feats, _crops(1, s, meta), prompt1, None, mhr)
        out["decoder_pass"] = fc.get_total_flops() / 1e12
        prompt4 = prompt1.expand(1, 4, 3)
        with FlopCounterMode(display=False) as fc:
            net.decode(net.body, feats, _crops(1, s, meta), prompt4, torch.zeros(1, 522, device=meta), mhr)
        prompted = fc.get_total_flops() / 1e12
    out["body_mode"] = out["backbone"] + out["decoder_pass"]
    out["full_mode"] = 3 * out["backbone"] + 3 * out["decoder_pass"] + prompted
    return out


def cpu_ms_tiny(n_people: int = 4, repeats: int = 5) -> dict[str, float]:
    """Median wall ms per crop of ``predict`` with the tiny test checkpoint (CPU, fp32)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_sam3dbody(Path(tmp))
        f = Path(tmp) / FOLDER
        model = load_sam3dbody(
            f / "model.ckpt",
            f / "model_config.yaml",
            f / "assets" / "mhr_model.pt",
            bbox_padding=1.25,
            mask_value=1,
        )
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    items = [BodyItem(img, np.array([50.0 + 100 * i, 40.0, 200.0 + 100 * i, 400.0])) for i in range(n_people)]
    out = {}
    for mode in ("body", "full"):
        model.predict(items, inference_type=mode)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.predict(items, inference_type=mode)
            times.append((time.perf_counter() - t) * 1000 / n_people)
        out[mode] = statistics.median(times)
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("threads: %d", torch.get_num_threads())
    flops = flops_per_crop()
    for k, v in flops.items():
        log.info("TFLOP %-13s %.3f", k, v)
    tiny_ms = cpu_ms_tiny()
    for k, v in tiny_ms.items():
        log.info("tiny CPU ms/crop %-5s %.1f", k, v)
    headline(
        "sam3dbody_bench",
        {
            "body mode TFLOP": flops["body_mode"],
            "full mode TFLOP": flops["full_mode"],
            **{f"tiny {mode} ms/crop": ms for mode, ms in tiny_ms.items()},
        },
    )


if __name__ == "__main__":
    main()
