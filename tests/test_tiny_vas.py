"""The tiny Diffusion-VAS folders: the released file set, dtypes and keys, stock loaders, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from safetensors import safe_open
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from body4d.testing.tiny_vas import (
    AMODAL_DIR,
    COMPLETION_DIR,
    RELEASED_FILES,
    TINY_UNET,
    model_index,
    write_tiny_vas,
)
from models.errors import TINY_MARKER

FOLDERS = (AMODAL_DIR, COMPLETION_DIR)
GOLDEN = Path(__file__).parent / "golden" / "vas_tiny.pt"


@pytest.fixture(scope="module")
def vas_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_vas")
    write_tiny_vas(root)
    return root


def _dtypes(path: Path) -> set[torch.dtype]:
    with safe_open(path, "pt") as f:
        names = f.keys()
        return {f.get_tensor(k).dtype for k in names}


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(path, "pt") as f:
        names = f.keys()
        return {k: tuple(f.get_slice(k).get_shape()) for k in names}


@pytest.mark.parametrize("name", FOLDERS)
def test_folder_holds_exactly_the_released_files(vas_root: Path, name: str) -> None:
    folder = vas_root / name
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted((*RELEASED_FILES, TINY_MARKER))
    assert (folder / TINY_MARKER).stat().st_size == 0


def test_model_index_is_the_released_pipelines(vas_root: Path) -> None:
    for name in FOLDERS:
        index = json.loads((vas_root / name / "model_index.json").read_text())
        assert index == model_index()
        assert index["_class_name"] == "DiffusionVASPipeline"
        assert index["unet"] == [
            "models.diffusion_vas.unet_diffusion_vas",
            "UNetSpatioTemporalConditionModel",
        ]
        assert index["vae"] == ["diffusers", "AutoencoderKLTemporalDecoder"]
        assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]


def test_unet_config_keeps_the_stock_class_and_eight_input_channels(vas_root: Path) -> None:
    config = json.loads((vas_root / AMODAL_DIR / "unet" / "config.json").read_text())
    assert config["_class_name"] == "UNetSpatioTemporalConditionModel"
    assert config["in_channels"] == 8
    assert config["cross_attention_dim"] == 32
    clip = json.loads((vas_root / AMODAL_DIR / "image_encoder" / "config.json").read_text())
    assert clip["projection_dim"] == config["cross_attention_dim"]


@pytest.mark.parametrize(
    ("rel", "dtype"),
    [
        ("unet/diffusion_pytorch_model.safetensors", torch.float32),
        ("vae/diffusion_pytorch_model.safetensors", torch.float16),
        ("image_encoder/model.safetensors", torch.float16),
    ],
)
def test_weights_are_stored_in_the_released_dtypes(vas_root: Path, rel: str, dtype: torch.dtype) -> None:
    for name in FOLDERS:
        assert _dtypes(vas_root / name / rel) == {dtype}


def test_unet_weights_are_the_stock_unet_plus_conv_in2(vas_root: Path) -> None:
    shapes = _shapes(vas_root / AMODAL_DIR / "unet" / "diffusion_pytorch_model.safetensors")
    assert shapes["conv_in2.weight"] == (32, 12, 3, 3)
    assert shapes["conv_in2.bias"] == (32,)
    assert shapes["conv_in.weight"] == (32, 8, 3, 3)  # kept by the release, unused by its forward
    stock = UNetSpatioTemporalConditionModel(**TINY_UNET).state_dict()
    assert {k: v for k, v in shapes.items() if not k.startswith("conv_in2.")} == {
        k: tuple(v.shape) for k, v in stock.items()
    }


def test_stock_classes_load_every_component(vas_root: Path) -> None:
    folder = vas_root / AMODAL_DIR
    scheduler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.use_karras_sigmas
    assert scheduler.config.timestep_type == "continuous"
    scheduler.set_timesteps(25)
    assert scheduler.sigmas[0].item() == pytest.approx(700.0)
    assert scheduler.sigmas[-2].item() == pytest.approx(0.002)
    # Continuous timesteps are 0.25 ln(sigma).
    assert scheduler.timesteps[0].item() == pytest.approx(0.25 * torch.log(torch.tensor(700.0)).item())

    vae, info = AutoencoderKLTemporalDecoder.from_pretrained(
        folder, subfolder="vae", dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert vae.dtype == torch.float32
    clip, info = CLIPVisionModelWithProjection.from_pretrained(
        folder, subfolder="image_encoder", dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        embeds = clip(pixel_values=torch.zeros(2, 3, 224, 224)).image_embeds
    assert embeds.shape == (2, 32)
    processor = CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor")
    assert processor.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert processor.image_std == pytest.approx([0.26862954, 0.26130258, 0.27577711])


def test_the_stock_unet_drops_conv_in2(vas_root: Path) -> None:
    """Why our own UNet subclass exists: the stock class ignores the 12-channel input conv."""
    _, info = UNetSpatioTemporalConditionModel.from_pretrained(
        vas_root / AMODAL_DIR, subfolder="unet", output_loading_info=True
    )
    assert sorted(info["unexpected_keys"]) == ["conv_in2.bias", "conv_in2.weight"]
    assert not info["missing_keys"]


def test_writer_is_deterministic_and_seeds_differ(vas_root: Path, tmp_path: Path) -> None:
    write_tiny_vas(tmp_path)
    for name in FOLDERS:
        for rel in RELEASED_FILES:
            assert (tmp_path / name / rel).read_bytes() == (vas_root / name / rel).read_bytes(), rel
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (vas_root / AMODAL_DIR / weights).read_bytes() != (
        vas_root / COMPLETION_DIR / weights
    ).read_bytes()


def test_writer_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    write_tiny_vas(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_golden_was_made_from_these_weights(vas_root: Path) -> None:
    """tests/golden/vas_tiny.pt records the released pipeline's outputs on exactly these files."""
    golden = torch.load(GOLDEN, weights_only=True)
    assert GOLDEN.stat().st_size < 1_500_000  # float64 step latents: ~0.2 MB of it
    assert golden["outputs"]["amodal"].shape == (1, 4, 3, 64, 64)
    assert golden["outputs"]["completion"].dtype == torch.float32
    if golden["versions"]["torch"] != torch.__version__:
        pytest.skip(f"golden made with torch {golden['versions']['torch']}: random init may differ")
    for key, digest in golden["checkpoint_sha256"].items():
        name, rel = key.split("/", 1)
        if rel.endswith(".json"):
            continue  # configs carry library version strings
        assert hashlib.sha256((vas_root / name / rel).read_bytes()).hexdigest() == digest, (
            f"{key} changed: regenerate with tests/golden/make_vas_golden.py"
        )
