from __future__ import annotations

from pathlib import Path

import pytest

from body4d.config import REPO_ROOT, ConfigError, load_config


def test_default_config_loads_with_interpolation() -> None:
    cfg = load_config()
    root = Path(cfg.paths.ckpt_root)
    assert root.is_absolute()
    assert cfg.sam3.ckpt_path == str(root / "sam3")
    assert cfg.sam_3d_body.mhr_path == str(root / "sam-3d-body-dinov3" / "assets" / "mhr_model.pt")
    assert cfg.sam_3d_body.fov_path == str(root / "moge-2-vitl-normal" / "model.pt")
    assert cfg.sam_3d_body.batch_size == 64
    assert cfg.completion.detection_resolution == (512, 1024)
    assert cfg.sam3.redetect_every == 30
    assert cfg.runtime.output_dir == str(REPO_ROOT / "outputs")


def test_every_original_key_is_present() -> None:
    d = load_config().to_dict()
    for section, key in [
        ("paths", "ckpt_root"),
        ("sam3", "ckpt_path"),
        ("sam_3d_body", "ckpt_path"),
        ("sam_3d_body", "mhr_path"),
        ("sam_3d_body", "fov_path"),
        ("sam_3d_body", "batch_size"),
        ("sam_3d_body", "detector_path"),
        ("sam_3d_body", "segmentor_path"),
        ("runtime", "output_dir"),
        ("runtime", "smpl_export"),
        ("completion", "enable"),
        ("completion", "detection_resolution"),
        ("completion", "completion_resolution"),
        ("completion", "model_path_mask"),
        ("completion", "model_path_rgb"),
        ("completion", "model_path_depth"),
        ("completion", "depth_encoder"),
        ("completion", "max_occ_len"),
    ]:
        assert key in d[section], f"{section}.{key} missing"


def test_env_overrides_ckpt_root_and_output_dir(tmp_path: Path) -> None:
    cfg = load_config(
        env={"BODY4D_CKPT_ROOT": str(tmp_path / "ck"), "BODY4D_OUTPUT_DIR": str(tmp_path / "o")}
    )
    assert cfg.sam3.ckpt_path == str(tmp_path / "ck" / "sam3")
    assert cfg.runtime.output_dir == str(tmp_path / "o")


def test_set_overrides_beat_env_and_parse_yaml_values(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            f"paths.ckpt_root={tmp_path}",
            "sam3.redetect_every=5",
            "completion.enable=true",
            "completion.detection_resolution=[256, 512]",
        ],
        env={"BODY4D_CKPT_ROOT": "/elsewhere"},
    )
    assert cfg.sam3.ckpt_path == str(tmp_path / "sam3")
    assert cfg.sam3.redetect_every == 5
    assert cfg.completion.enable is True
    assert cfg.completion.detection_resolution == (256, 512)


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            overrides=[
                "sam3.bogus=1",
                "video.crf=99",
                "runtime.dtype=fp64",
                "sam_3d_body.batch_size=abc",
                "nosuch.key=1",
            ]
        )
    problems = err.value.problems
    assert len(problems) == 5
    text = str(err.value)
    assert "unknown key sam3.bogus" in text and "valid keys of sam3" in text
    assert "video.crf = 99 is out of range" in text
    assert "runtime.dtype = 'fp64' is not one of 'fp32', 'bf16', 'fp16'" in text
    assert "sam_3d_body.batch_size = 'abc' must be an integer" in text
    assert "unknown section 'nosuch'" in text


def test_sam3dbody_precision_and_mask_value() -> None:
    cfg = load_config()
    assert cfg.sam_3d_body.dtype == "auto" and cfg.sam_3d_body.mask_value == 1
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["sam_3d_body.dtype=fp16", "sam_3d_body.mask_value=128"])
    text = str(err.value)
    assert "sam_3d_body.dtype = 'fp16' is not one of 'auto', 'fp32', 'bf16'" in text
    assert "sam_3d_body.mask_value = 128 is out of range: use 1 (default) or 255" in text


def test_resolution_must_be_multiple_of_64() -> None:
    with pytest.raises(ConfigError, match="multiples of 64"):
        load_config(overrides=["completion.completion_resolution=[500, 1000]"])


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(overrides=["sam3.redetect_every"])


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_partial_yaml_uses_defaults_and_relative_paths(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("paths:\n  ckpt_root: ./my_ckpts\nsam3:\n  detection_threshold: 0.7\n")
    cfg = load_config(y)
    assert cfg.paths.ckpt_root == str(REPO_ROOT / "my_ckpts")
    assert cfg.sam3.ckpt_path == str(REPO_ROOT / "my_ckpts" / "sam3")
    assert cfg.sam3.detection_threshold == 0.7
    assert cfg.video.max_frames == 1800


def test_replace_returns_new_validated_config() -> None:
    cfg = load_config()
    new = cfg.replace(**{"sam3.redetect_every": 7})
    assert new.sam3.redetect_every == 7 and cfg.sam3.redetect_every == 30
    with pytest.raises(ConfigError):
        cfg.replace(**{"video.crf": -1})
