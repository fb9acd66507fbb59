from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import pytest
import yaml

from body4d.config import (
    DEFAULT_CONFIG,
    REPO_ROOT,
    Config,
    ConfigError,
    find_config,
    load_config,
    user_config,
)

# section -> key -> type hint
SCHEMA = {name: typing.get_type_hints(section) for name, section in typing.get_type_hints(Config).items()}


def test_default_config_loads_with_interpolation() -> None:
    cfg = load_config(env={})
    root = Path(cfg.paths.ckpt_root)
    assert root == REPO_ROOT / "checkpoints"
    assert cfg.sam3.ckpt_path == str(root / "sam3")
    assert cfg.sam_3d_body.mhr_path == str(root / "sam-3d-body-dinov3" / "assets" / "mhr_model.pt")
    assert cfg.camera.ckpt_path == str(root / "moge-2-vitl-normal" / "model.pt")
    assert cfg.completion.model_path_depth == str(root / "depth-anything-v2-large-hf")
    assert cfg.sam_3d_body.batch_size == 64
    assert cfg.sam3.redetect_every == 30
    assert cfg.video.folder_fps == 30.0 and isinstance(cfg.video.folder_fps, float)
    assert cfg.runtime.output_dir == str(REPO_ROOT / "outputs")
    assert cfg.app.examples_dir == str(REPO_ROOT / "assets" / "examples")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sam3.redetect_every = 1  # type: ignore[misc]


def test_shipped_yaml_documents_exactly_the_schema_defaults() -> None:
    """The dataclass defaults are the truth; the shipped YAML must list every key with the same value."""
    shipped = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert shipped == Config().to_dict()
    assert list(shipped) == list(SCHEMA), "sections in the schema's order"
    for name, keys in shipped.items():
        assert list(keys) == list(SCHEMA[name]), f"keys of {name} in the schema's order"


def test_dead_keys_are_gone_and_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            overrides=[
                "runtime.seed=23",
                "runtime.smpl_export=false",
                "sam_3d_body.detector_path=",
                "completion.max_occ_length=25",
                "rendering.alpha=0.9",
            ],
            env={},
        )
    text = str(err.value)
    assert len(err.value.problems) == 5
    assert "unknown key runtime.seed: valid keys of runtime are output_dir, device, dtype" in text
    assert "unknown key sam_3d_body.detector_path" in text
    assert "unknown key completion.max_occ_length" in text
    assert "unknown section 'rendering': valid sections are paths, runtime, video" in text


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
            "smoothing.fill_mode=linear",
            "sam3.detection_prompt=",
        ],
        env={"BODY4D_CKPT_ROOT": "/elsewhere"},
    )
    assert cfg.sam3.ckpt_path == str(tmp_path / "sam3")
    assert cfg.sam3.redetect_every == 5
    assert cfg.completion.enable is True
    assert cfg.smoothing.fill_mode == "linear"
    assert cfg.sam3.detection_prompt == ""


def test_every_problem_of_every_layer_reported_at_once(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("sam3:\n  bogus: 1\nvideo:\n  crf: 99\nnosuch:\n  key: 1\ncamera: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(
            y,
            overrides=[
                "runtime.dtype=fp64",
                "sam_3d_body.batch_size=abc",
                "sam_3d_body.bbox_padding=.inf",
                "sam3.ckpt_path=${nope}/sam3",
                "app.port",
            ],
            env={"BODY4D_OUTPUT_DIR": str(tmp_path)},
        )
    problems = err.value.problems
    assert len(problems) == 9, problems
    text = str(err.value)
    assert text.startswith(f"9 configuration problem(s) in {y}:")
    assert "unknown key sam3.bogus: valid keys of sam3 are ckpt_path, detection_threshold" in text
    assert "video.crf = 99 is out of range: use an H.264 CRF between 0 and 51" in text
    assert "unknown section 'nosuch'" in text
    assert "camera must be a mapping of keys, got int" in text
    assert "runtime.dtype = 'fp64' is not one of 'fp32', 'bf16', 'fp16': pick one of them" in text
    assert "sam_3d_body.batch_size = 'abc' must be an integer" in text
    assert (
        "sam_3d_body.bbox_padding = inf is not a finite number: use a padding factor from 1.0 to 10.0" in text
    )
    assert "sam3.ckpt_path = '${nope}/sam3' cannot be resolved (Interpolation key 'nope' not found)" in text
    assert "override 'app.port' is not key=value: write e.g. --set sam3.redetect_every=10" in text


def test_every_key_of_the_wrong_type_is_listed() -> None:
    keys = [f"{name}.{key}" for name, hints in SCHEMA.items() for key in hints]
    with pytest.raises(ConfigError) as err:
        load_config(overrides={key: [1, 2] for key in keys}, env={})
    problems = err.value.problems
    assert len(problems) == len(keys)
    for key, problem in zip(keys, problems, strict=True):
        assert problem.startswith(f"{key} = [1, 2] ")
        assert " must be " in problem or "is not one of" in problem


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_every_float_key_refuses_non_finite_numbers(value: str) -> None:
    floats = [
        f"{name}.{key}" for name, hints in SCHEMA.items() for key, hint in hints.items() if hint is float
    ]
    assert "sam_3d_body.bbox_padding" in floats and "app.max_video_seconds" in floats
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"{key}={value}" for key in floats], env={})
    problems = err.value.problems
    assert len(problems) == len(floats)
    for key, problem in zip(floats, problems, strict=True):
        assert problem.startswith(f"{key} = ") and " is not a finite number: " in problem


def test_broken_interpolations_are_listed() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            overrides={
                "sam3.ckpt_path": "${nope}/sam3",
                "sam_3d_body.ckpt_path": "${paths.ckpt_root",
                "video.crf": "${paths.ckpt_root}",
            },
            env={},
        )
    assert err.value.problems == [
        "sam_3d_body.ckpt_path = '${paths.ckpt_root' is not a valid interpolation: "
        "write it like ${paths.ckpt_root}/sam3",
        "video.crf = '${paths.ckpt_root}' cannot be resolved (While dereferencing interpolation "
        "'${paths.ckpt_root}': Value './checkpoints' of type 'str' could not be converted to Integer): "
        "fix the ${...} reference",
        "sam3.ckpt_path = '${nope}/sam3' cannot be resolved (Interpolation key 'nope' not found): "
        "fix the ${...} reference",
    ]


def test_omegaconf_conversions_apply() -> None:
    cfg = load_config(
        overrides={"video.crf": "20", "app.max_video_seconds": 5, "completion.enable": "yes"}, env={}
    )
    assert cfg.video.crf == 20 and cfg.app.max_video_seconds == 5.0 and cfg.completion.enable is True
    with pytest.raises(ConfigError, match=r"video.crf = 20.5 must be an integer"):
        load_config(overrides={"video.crf": 20.5}, env={})


def test_sam3dbody_precision_and_mask_value() -> None:
    cfg = load_config(env={})
    assert cfg.sam_3d_body.dtype == "auto" and cfg.sam_3d_body.mask_value == 1
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["sam_3d_body.dtype=fp16", "sam_3d_body.mask_value=128"], env={})
    text = str(err.value)
    assert "sam_3d_body.dtype = 'fp16' is not one of 'auto', 'fp32', 'bf16'" in text
    assert "sam_3d_body.mask_value = 128 is out of range: use 1 (default) or 255" in text


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match="none.yaml does not exist or is not a file: pass an existing YAML file or omit --config",
    ):
        load_config(tmp_path / "none.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths:\n  ckpt_root: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, overrides=["video.crf=-1"], env={})
    assert len(err.value.problems) == 2
    assert f"{bad} is not valid YAML (" in str(err.value) and "line 3, column 1): fix the syntax" in str(
        err.value
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- paths\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(listed, env={})


def test_partial_yaml_uses_defaults_and_relative_paths(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("paths:\n  ckpt_root: ./my_ckpts\nsam3:\n  detection_threshold: 0.7\nsmoothing:\n")
    cfg = load_config(y, env={})
    assert cfg.paths.ckpt_root == str(REPO_ROOT / "my_ckpts")
    assert cfg.sam3.ckpt_path == str(REPO_ROOT / "my_ckpts" / "sam3")
    assert cfg.sam3.detection_threshold == 0.7
    assert cfg.video.max_frames == 9000
    assert cfg.smoothing == Config().smoothing, "an empty section keeps its defaults"


def test_config_file_precedence(tmp_path: Path) -> None:
    """--config > BODY4D_CONFIG > user config (XDG_CONFIG_HOME, else HOME/.config) > shipped default."""
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    assert find_config(env={"HOME": str(home)}) == DEFAULT_CONFIG, "no user config yet"
    files = {}
    for name, path in [
        ("home", home / ".config" / "body4d" / "body4d.yaml"),
        ("xdg", xdg / "body4d" / "body4d.yaml"),
        ("env", tmp_path / "env.yaml"),
        ("explicit", tmp_path / "explicit.yaml"),
    ]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"paths:\n  ckpt_root: /{name}\n")
        files[name] = path
    assert user_config({"HOME": str(home)}) == files["home"]
    assert user_config({}) is None
    env = {"HOME": str(home)}
    assert load_config(env=env).paths.ckpt_root == "/home"
    env["XDG_CONFIG_HOME"] = str(xdg)
    assert load_config(env=env).paths.ckpt_root == "/xdg"
    env["BODY4D_CONFIG"] = str(files["env"])
    assert find_config(env=env) == files["env"]
    assert load_config(env=env).paths.ckpt_root == "/env"
    assert load_config(files["explicit"], env=env).paths.ckpt_root == "/explicit"
    env["BODY4D_CKPT_ROOT"] = "/from_env_var"
    assert load_config(files["explicit"], env=env).paths.ckpt_root == "/from_env_var"
    assert load_config(env={}).paths.ckpt_root == str(REPO_ROOT / "checkpoints"), "env={} ignores them all"


def test_missing_body4d_config_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="point BODY4D_CONFIG at an existing YAML file or unset it"):
        load_config(env={"BODY4D_CONFIG": str(tmp_path / "gone.yaml")})


def test_replace_returns_new_validated_config(tmp_path: Path) -> None:
    cfg = load_config(env={})
    new = cfg.replace(**{"sam3.redetect_every": 7})
    assert new.sam3.redetect_every == 7 and cfg.sam3.redetect_every == 30
    assert new.sam3.ckpt_path == cfg.sam3.ckpt_path
    with pytest.raises(ConfigError) as err:
        cfg.replace(**{"video.crf": -1, "camera.bogus": 1, "smoothing.beta": float("nan")})
    assert len(err.value.problems) == 3 and "in replace()" in str(err.value)
    rerooted = Config().replace(**{"paths.ckpt_root": str(tmp_path)})
    assert rerooted.sam_3d_body.ckpt_path == str(tmp_path / "sam-3d-body-dinov3" / "model.ckpt")


def test_to_dict_is_plain_json_and_loads_back(tmp_path: Path) -> None:
    cfg = load_config(env={})
    snapshot = json.loads(json.dumps(cfg.to_dict()))
    y = tmp_path / "snapshot.yaml"
    y.write_text(yaml.safe_dump(snapshot))
    assert load_config(y, env={}) == cfg


def test_wheel_ships_the_default_config_and_an_install_loads_it(tmp_path: Path) -> None:
    """A non-editable install finds its default config; relative paths resolve against the current folder."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("body4d", "models"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("body4d-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("body4d/configs/body4d.yaml") == DEFAULT_CONFIG.read_bytes()
        zf.extractall(tmp_path / "site")
    work = tmp_path / "work"
    work.mkdir()
    probe = (
        "import json, body4d.config as c; cfg = c.load_config(env={}); "
        "print(json.dumps([c.__file__, str(c.DEFAULT_CONFIG), cfg.paths.ckpt_root, cfg.runtime.output_dir]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    module, default, ckpt_root, output_dir = json.loads(run.stdout)
    assert module == str(tmp_path / "site" / "body4d" / "config.py")
    assert default == str(tmp_path / "site" / "body4d" / "configs" / "body4d.yaml")
    assert (ckpt_root, output_dir) == (str(work / "checkpoints"), str(work / "outputs"))
