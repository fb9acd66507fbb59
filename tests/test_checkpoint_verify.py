"""body4d.checkpoint_verify on the real tiny checkpoints: every level catches what it is for, names the
file and says why, and a tiny checkpoint is never mistaken for a released one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub._local_folder import read_download_metadata
from safetensors.torch import load_file, save_file

from body4d.checkpoint_verify import (
    BROKEN,
    MISSING,
    NAMES,
    OK,
    PUBLISHED,
    TINY,
    Checkpoint,
    DownloadRecord,
    Published,
    checkpoints,
    verify,
)
from body4d.config import Config, load_config
from body4d.examples import file_sha256
from models.errors import TINY_MARKER
from models.moge import CHECKPOINT_FILE
from models.sam3 import SNAPSHOT_FILES

BODY = "facebook/sam-3d-body-dinov3"


def _cfg(root: Path, **overrides: object) -> Config:
    return load_config(overrides={"paths.ckpt_root": str(root), **overrides}, env={})


def _one(root: Path, name: str) -> Checkpoint:
    (checkpoint,) = checkpoints(_cfg(root), [name])
    return checkpoint


def _copy(tiny_ckpt_root: Path, root: Path, name: str, *, tiny: bool = True) -> Checkpoint:
    """Checkpoint ``name`` copied from the session's tiny checkpoints into ``root``."""
    checkpoint = _one(root, name)
    shutil.copytree(tiny_ckpt_root / checkpoint.subdir, checkpoint.folder)
    if not tiny:
        (checkpoint.folder / TINY_MARKER).unlink()
    return checkpoint


def test_checkpoints_follow_the_config_and_the_loaders_file_lists(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"sam3.ckpt_path": "/shared/sam3"})
    items = {c.name: c for c in checkpoints(cfg)}
    assert list(items) == ["sam3", "sam-3d-body", "moge"], "completion models only when enabled"
    assert items["sam3"].folder == Path("/shared/sam3")
    assert items["sam3"].files == {f: Path("/shared/sam3") / f for f in SNAPSHOT_FILES}
    body = items["sam-3d-body"]
    assert body.repo_id == BODY and body.folder == tmp_path / "sam-3d-body-dinov3"
    assert body.files["assets/mhr_model.pt"] == body.folder / "assets" / "mhr_model.pt"
    assert items["moge"].files == {CHECKPOINT_FILE: tmp_path / "moge-2-vitl-normal" / CHECKPOINT_FILE}
    enabled = checkpoints(cfg.replace(**{"completion.enable": True, "camera.ckpt_path": ""}))
    assert [c.name for c in enabled] == ["sam3", "sam-3d-body", "vas-amodal", "vas-completion", "depth"]
    vas = enabled[2].files
    assert "model_index.json" in vas and "unet/diffusion_pytorch_model.safetensors" in vas
    assert [c.name for c in checkpoints(cfg, ["depth", "sam3"])] == ["sam3", "depth"], "NAMES order"
    with pytest.raises(ValueError, match="unknown checkpoint name.* sam4: valid names are sam3, sam-3d-body"):
        checkpoints(cfg, ["sam4"])
    with pytest.raises(ValueError, match="camera.ckpt_path is empty, so MoGe-2 is not used"):
        checkpoints(cfg.replace(**{"camera.ckpt_path": ""}), ["moge"])
    apart = cfg.replace(**{"sam_3d_body.mhr_path": "/elsewhere/mhr_model.pt"})
    with pytest.raises(ValueError, match="/elsewhere/mhr_model.pt is outside .*sam-3d-body-dinov3"):
        checkpoints(apart, ["sam-3d-body"])


def test_every_tiny_checkpoint_verifies_as_tiny_never_ok(tiny_ckpt_root: Path) -> None:
    results = {c.name: verify(c) for c in checkpoints(_cfg(tiny_ckpt_root), NAMES)}
    assert {n: v.status for n, v in results.items()} == dict.fromkeys(NAMES, TINY)
    assert all(v.ok and not v.problems for v in results.values())
    assert results["sam-3d-body"].notes == (
        "model.ckpt: tiny test checkpoint, the published size and sha256 do not apply",
        "assets/mhr_model.pt: tiny test checkpoint, the published size and sha256 do not apply",
    )


def test_published_size_and_sha256_are_checked(tmp_path: Path, tiny_ckpt_root: Path) -> None:
    body = _copy(tiny_ckpt_root, tmp_path, "sam-3d-body", tiny=False)
    ckpt, mhr = body.files["model.ckpt"], body.files["assets/mhr_model.pt"]
    released = verify(body)  # the real table: a 48 MB model.ckpt is not the 2.1 GB release
    assert released.status == BROKEN and released.refetch == ("model.ckpt", "assets/mhr_model.pt")
    assert released.problems[0] == (
        f"model.ckpt: {ckpt.stat().st_size:,} bytes, the published file has 2,109,129,346 "
        "(truncated or another file)"
    )
    exact = {
        (BODY, "model.ckpt"): Published(ckpt.stat().st_size, file_sha256(ckpt)),
        (BODY, "assets/mhr_model.pt"): Published(mhr.stat().st_size, file_sha256(mhr)),
    }
    assert verify(body, exact).status == OK
    wrong = exact | {(BODY, "model.ckpt"): Published(ckpt.stat().st_size, "a" * 64)}
    result = verify(body, wrong)
    assert result.status == BROKEN and result.refetch == ("model.ckpt",)
    assert result.problems == (
        f"model.ckpt: sha256 {file_sha256(ckpt)} differs from the published {'a' * 64}",
    )
    assert PUBLISHED[(BODY, "model.ckpt")].sha256.startswith("b5a2f9d3"), "real-checkpoints.md"


def test_the_download_record_catches_a_file_damaged_since(tmp_path: Path, tiny_ckpt_root: Path) -> None:
    depth = _copy(tiny_ckpt_root, tmp_path, "depth")
    weights = depth.files["model.safetensors"]
    DownloadRecord("c" * 40, file_sha256(weights)).write(depth.folder, "model.safetensors")
    DownloadRecord("c" * 40, "d" * 40).write(depth.folder, "config.json")  # a git ETag: no sha256
    hub_view = read_download_metadata(depth.folder, "model.safetensors")
    assert hub_view is not None and hub_view.etag == file_sha256(weights), "huggingface_hub reads the record"
    assert verify(depth).status == TINY
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the tensor data: the header still reads
    weights.write_bytes(bytes(data))
    result = verify(depth)
    assert result.status == BROKEN and result.refetch == ("model.safetensors",)
    (problem,) = result.problems
    assert problem.startswith(f"model.safetensors: sha256 {file_sha256(weights)} differs from the ")
    assert "the source reported at download (damaged since, or a bad download)" in problem


def test_format_checks_name_the_damaged_file(tmp_path: Path, tiny_ckpt_root: Path) -> None:
    depth = _copy(tiny_ckpt_root, tmp_path / "a", "depth")
    depth.files["config.json"].write_text("{not json")
    (problem,) = verify(depth).problems
    assert problem.startswith("config.json: not valid JSON")
    shutil.copy(tiny_ckpt_root / depth.subdir / "config.json", depth.files["config.json"])
    weights = depth.files["model.safetensors"]
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated download
    result = verify(depth)
    assert result.status == BROKEN and result.refetch == ("model.safetensors",)
    assert result.problems[0].startswith("model.safetensors: unreadable safetensors header")

    moge = _copy(tiny_ckpt_root, tmp_path / "b", "moge")
    moge.files[CHECKPOINT_FILE].write_bytes(b"PK not a checkpoint")
    (problem,) = verify(moge).problems
    assert problem.startswith("model.pt: torch.load(weights_only=True) fails")

    body = _copy(tiny_ckpt_root, tmp_path / "c", "sam-3d-body")
    mhr = body.files["assets/mhr_model.pt"]
    mhr.write_bytes(mhr.read_bytes()[: mhr.stat().st_size // 2])
    result = verify(body)
    assert result.refetch == ("assets/mhr_model.pt",)
    assert result.problems[0].startswith("assets/mhr_model.pt: torch.jit.load fails")
    mhr.write_bytes(b"")
    assert verify(body).problems == ("assets/mhr_model.pt: empty file (an interrupted copy?)",)


def test_fit_checks_refuse_intact_files_that_do_not_make_the_model(
    tmp_path: Path, tiny_ckpt_root: Path
) -> None:
    def unfit(checkpoint: Checkpoint) -> str:
        result = verify(checkpoint)
        assert result.status == BROKEN and result.refetch == (), "another copy would not fit either"
        return "\n".join(result.problems)

    sam3 = _copy(tiny_ckpt_root, tmp_path / "a", "sam3")
    config = json.loads(sam3.files["config.json"].read_text())
    sam3.files["config.json"].write_text(json.dumps(config | {"model_type": "sam2_video"}))
    assert "holds a 'sam2_video' checkpoint, not a facebook/sam3 snapshot" in unfit(sam3)
    sam3.files["config.json"].write_text(json.dumps(config))
    weights = load_file(sam3.files["model.safetensors"])
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("detector_model.")},
        sam3.files["model.safetensors"],
    )
    assert "model.safetensors has no detector_model.* weights" in unfit(sam3)

    body = _copy(tiny_ckpt_root, tmp_path / "b", "sam-3d-body")
    sd = torch.load(body.files["model.ckpt"], weights_only=True)
    del sd["head_pose.proj.layers.0.0.weight"]
    torch.save(sd, body.files["model.ckpt"])
    assert "missing keys (1): body.pose_head.proj.layers.0.0.weight" in unfit(body)

    moge = _copy(tiny_ckpt_root, tmp_path / "c", "moge")
    ckpt = torch.load(moge.files[CHECKPOINT_FILE], weights_only=True)
    ckpt["model"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, moge.files[CHECKPOINT_FILE])
    assert (
        "model.pt does not match the MoGe-2 model of its model_config: unexpected keys [extra.weight]"
        in unfit(moge)
    )

    vas = _copy(tiny_ckpt_root, tmp_path / "d", "vas-amodal")
    unet = vas.files["unet/diffusion_pytorch_model.safetensors"]
    save_file({k: v for k, v in load_file(unet).items() if not k.startswith("conv_in2.")}, unet)
    assert "has no 12-channel conv_in2 (found None): a stock Stable Video Diffusion UNet" in unfit(vas)

    depth = _copy(tiny_ckpt_root, tmp_path / "e", "depth")
    config = json.loads(depth.files["config.json"].read_text())
    depth.files["config.json"].write_text(json.dumps(config | {"depth_estimation_type": "metric"}))
    assert "a 'metric' depth model; Diffusion-VAS needs the 'relative' one" in unfit(depth)


def test_missing_files_are_missing_and_verification_writes_nothing(
    tmp_path: Path, tiny_ckpt_root: Path
) -> None:
    absent = _one(tmp_path / "none", "vas-completion")
    result = verify(absent)
    assert result.status == MISSING and result.missing == tuple(absent.files)
    assert result.problems == (f"{absent.folder} not found",)
    assert not (tmp_path / "none").exists()
    sam3 = _copy(tiny_ckpt_root, tmp_path / "a", "sam3")
    sam3.files["tokenizer.json"].unlink()
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    result = verify(sam3)
    assert result.status == MISSING and result.missing == ("tokenizer.json",)
    assert result.problems == ("missing tokenizer.json",) and result.refetch == ()
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
