"""Tiny random SAM-3 checkpoint in the real ``facebook/sam3`` folder layout (CPU tests only).

The real snapshot is ONE ``Sam3VideoModel`` checkpoint (``config.json`` with ``model_type:
"sam3_video"``, ``model.safetensors`` with ``detector_model.*``, ``tracker_model.*`` and
``tracker_neck.*`` keys) plus the processor files (``processor_config.json`` with the nested image
and video processors) and a CLIP tokenizer (``tokenizer.json``, ``tokenizer_config.json`` and the
legacy ``vocab.json``, ``merges.txt``, ``special_tokens_map.json``): the `HUB_FILES`. Both networks
body4d uses, ``Sam3TrackerVideoModel`` (clicks, propagation) and ``Sam3Model`` (text "person"
detection), load from that one folder through transformers' own key renaming. We write the same
files with tiny configs, so ``models.sam3.Sam3Models.load`` runs the production loading code on it.

Random weights would never fire, so two heads are biased (test-only; documented here):

* detector: ``dot_product_scoring.text_proj`` and ``query_proj`` have zero weights and constant
  biases, so every query's class logit is the positive constant ``DETECTOR_LOGIT`` (clamped at 12
  by the model), and the presence head's last bias is ``PRESENCE_LOGIT``. Every query then scores
  ``sigmoid(12) * sigmoid(10) ~= 0.99995`` on any image and prompt, above any threshold < 0.9999.
  The query masks and boxes stay random; box NMS in the adapter merges duplicates.
* tracker: the object-score head bias is ``OBJECT_SCORE_BIAS`` so the tracker reports the object
  as present on every frame (otherwise all masks are ``NO_OBJ_SCORE`` = empty).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from models.errors import TINY_MARKER

log = logging.getLogger(__name__)

SAM3_DIRNAME = "sam3"
# The transformers files of the facebook/sam3 hub repository, as listed by independent inventories
# of downloaded snapshots. The repository also holds README.md, .gitattributes and Meta's own
# sam3.pt, which scripts/setup.py does not download. transformers 5.23 needs five of these eight:
# models.sam3.SNAPSHOT_FILES.
HUB_FILES = (
    "config.json",
    "merges.txt",
    "model.safetensors",
    "processor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
)
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"

PATCH = 14  # ViT patch size of the real model
IMAGE_SIZE = 112  # model input side (real: 1008); 8x8 patches
HIDDEN = 128  # tracker/detector width (real: 256); must be a multiple of 64 and > 64
VIT_HIDDEN = 32  # ViT width (real: 1024)
MEMORY_CHANNELS = 64  # tracker memory width; fixed by the HF memory attention (kv_in_dim=64)
NUM_MASKMEM = 7  # memory frames of the tracker (real: 7)
NUM_QUERIES = 20  # detector DETR queries (real: 200)
TEXT_MAX_LENGTH = 32  # CLIP context length of facebook/sam3's tokenizer
SMALL_FFN = 64  # feed-forward width of every tiny block

DETECTOR_LOGIT = 12.0  # class logit forced on every query (the model clamps at 12)
PRESENCE_LOGIT = 10.0  # presence-token logit (the model clamps at 10)
OBJECT_SCORE_BIAS = 8.0  # tracker object-score logit bias: "object present"
SEED = 0  # weights are a pure function of this seed


def _vision_config(image_size: int) -> dict[str, Any]:
    grid = image_size // PATCH
    return {
        "model_type": "sam3_vision_model",
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": VIT_HIDDEN,
            "intermediate_size": SMALL_FFN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": PATCH,
            "window_size": 4,
            "global_attn_indexes": [1],
            "pretrain_image_size": image_size,
        },
        "fpn_hidden_size": HIDDEN,
        "backbone_feature_sizes": [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
    }


def _detector_config(image_size: int) -> dict[str, Any]:
    block = {"hidden_size": HIDDEN, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": SMALL_FFN}
    return {
        "vision_config": _vision_config(image_size),
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": 600,
            "hidden_size": 32,
            "intermediate_size": SMALL_FFN,
            "projection_dim": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "hidden_act": "gelu",
            # the tiny vocabulary below puts <|startoftext|>=0 and <|endoftext|>=1
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        "geometry_encoder_config": dict(block),
        "detr_encoder_config": dict(block),
        "detr_decoder_config": {**block, "num_queries": NUM_QUERIES},
        "mask_decoder_config": {"hidden_size": HIDDEN, "num_attention_heads": 2},
    }


def _tracker_config(image_size: int) -> dict[str, Any]:
    grid = image_size // PATCH
    return {
        "vision_config": _vision_config(image_size),
        "prompt_encoder_config": {
            "hidden_size": HIDDEN,
            "image_size": image_size,
            "patch_size": PATCH,
            "mask_input_channels": 4,
        },
        "mask_decoder_config": {
            "hidden_size": HIDDEN,
            "mlp_dim": SMALL_FFN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": HIDDEN,
        },
        "num_maskmem": NUM_MASKMEM,
        "memory_attention_hidden_size": HIDDEN,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": SMALL_FFN,
        "memory_attention_rope_feat_sizes": [grid, grid],
        "memory_encoder_hidden_size": HIDDEN,
        "memory_encoder_output_channels": MEMORY_CHANNELS,
        "mask_downsampler_embed_dim": HIDDEN,
        "memory_fuser_embed_dim": HIDDEN,
        "memory_fuser_intermediate_dim": SMALL_FFN,
        "memory_fuser_num_layers": 1,
        "image_size": image_size,
    }


def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level CLIP BPE vocabulary: 2 specials, 512 byte symbols, 5 merges (token -> id, merges).

    The merges make ``"person"`` a single token, like in the real vocabulary.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {_BOS: 0, _EOS: 1}
    for suffix in ("", "</w>"):
        for s in symbols:
            vocab[s + suffix] = len(vocab)
    merges = [("p", "e"), ("pe", "r"), ("per", "s"), ("o", "n</w>"), ("pers", "on</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def _clip_tokenizer():  # -> transformers.CLIPTokenizer
    """The tiny CLIP tokenizer built in memory from `_clip_vocab`."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_MAX_LENGTH)


def _write_legacy_tokenizer_files(out: Path) -> None:
    """``vocab.json``, ``merges.txt`` and ``special_tokens_map.json`` as transformers 4.x wrote them.

    The hub files date from then; transformers 5 saves only ``tokenizer.json`` and
    ``tokenizer_config.json``, so these three are written here to keep the real file set.
    """
    vocab, merges = _clip_vocab()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text("#version: 0.2\n" + lines, encoding="utf-8")
    special = {"bos_token": _BOS, "eos_token": _EOS, "pad_token": _EOS, "unk_token": _EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def _processor(image_size: int):  # -> transformers.Sam3VideoProcessor
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoProcessor

    low_res = 4 * (image_size // PATCH)
    image_processor = Sam3ImageProcessor(
        size={"height": image_size, "width": image_size},
        mask_size={"height": low_res, "width": low_res},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    video_processor = Sam2VideoVideoProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return Sam3VideoProcessor(
        image_processor=image_processor, video_processor=video_processor, tokenizer=_clip_tokenizer()
    )


def _bias_heads(model: torch.nn.Module) -> None:
    """Make the random detector fire on every query and the tracker see its object (see module doc)."""
    scoring = model.detector_model.dot_product_scoring
    decoder = model.detector_model.detr_decoder
    dim = scoring.text_proj.out_features
    # logit = <text_proj(t), query_proj(q)> / sqrt(dim) = dim * c^2 / sqrt(dim) with constant biases c
    c = (DETECTOR_LOGIT / dim**0.5) ** 0.5
    with torch.no_grad():
        for proj in (scoring.text_proj, scoring.query_proj):
            proj.weight.zero_()
            proj.bias.fill_(c)
        decoder.presence_head.layer3.bias.fill_(PRESENCE_LOGIT)
        model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_SCORE_BIAS)


def write_tiny_sam3(root: Path, *, image_size: int = IMAGE_SIZE) -> None:
    """Write a tiny random ``facebook/sam3``-layout checkpoint to ``root / "sam3"``.

    Args:
        root: checkpoint root (``paths.ckpt_root``); created if missing.
        image_size: model input side in pixels, a multiple of 14 (real model: 1008); the
            memory benchmark uses larger sides to show how session memory scales.

    Writes the `HUB_FILES` of the real snapshot and the empty marker ``BODY4D_TINY_TEST_CHECKPOINT``.
    Deterministic (seeded).
    """
    from transformers import Sam3VideoConfig, Sam3VideoModel

    if image_size % PATCH:
        raise ValueError(f"image_size must be a multiple of {PATCH}, got {image_size}")
    out = Path(root) / SAM3_DIRNAME
    out.mkdir(parents=True, exist_ok=True)
    config = Sam3VideoConfig(
        detector_config=_detector_config(image_size),
        tracker_config=_tracker_config(image_size),
        low_res_mask_size=4 * (image_size // PATCH),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Sam3VideoModel(config).eval()
    _bias_heads(model)
    model.save_pretrained(out)
    _processor(image_size).save_pretrained(out)
    _write_legacy_tokenizer_files(out)
    (out / TINY_MARKER).touch()
    log.info("wrote tiny SAM-3 checkpoint to %s", out)
