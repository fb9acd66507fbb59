"""Bad and hostile input is refused with one clear line (exit 2) before any model loads.

Configs (non-finite or absurd numbers, YAML bombs, wrong containers), oversized or fake frames,
mask folders (lossy, truncated, not images, wrong count or size), prompts (too many clicks or
people, huge numbers), non-regular files and truncated videos.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from body4d.config import _RANGES, _SCHEMA, MAX_CONFIG_BYTES, ConfigError, load_config

SCHEMA_NUMERIC = [
    f"{name}.{key}" for name, hints in _SCHEMA.items() for key, hint in hints.items() if hint in (int, float)
]


# --------------------------------------------------------------------------- config


def test_every_numeric_key_is_range_checked() -> None:
    assert "limits.max_frame_pixels" in SCHEMA_NUMERIC and "video.folder_fps" in SCHEMA_NUMERIC
    for key in SCHEMA_NUMERIC:
        name, _, leaf = key.partition(".")
        assert (name, leaf) in _RANGES, f"{key} has no range check in body4d/config.py _RANGES"
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"{key}=-1000000000" for key in SCHEMA_NUMERIC], env={})
    problems = err.value.problems
    assert len(problems) == len(SCHEMA_NUMERIC)
    for key, problem in zip(SCHEMA_NUMERIC, problems, strict=True):
        assert re.match(rf"{re.escape(key)} = -1000000000(\.0)? is out of range: use \S", problem), problem


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            "video.folder_fps=0.0001",
            "video.folder_fps = 0.0001 is out of range: use a frame rate from 1 to 1000 fps",
        ),
        ("sam_3d_body.bbox_padding=1e300", "use a padding factor from 1.0 to 10.0"),
        (
            "limits.max_people=256",
            "limits.max_people = 256 is out of range: use a number of people from 1 to 255",
        ),
        ("limits.max_clicks=0", "limits.max_clicks = 0 is out of range: use at least 1 click"),
        ("video=[1,2]", "video must be a mapping of keys, got list"),
    ],
)
def test_degenerate_values_name_the_key_and_range(override: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override], env={})
    assert says in str(err.value)


def _billion_laughs(indent: str = "") -> str:
    """Nine levels of nine aliases: 9**9 strings once expanded, ~800 bytes of YAML."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("app:\n" + _billion_laughs("  ") + "  host: *l8\n", 2),  # under a real key: was a hang
        ("video: &a\n  max_frames: *a\n", 1),  # recursive: was a RecursionError traceback
        ("video:\n  max_frames: &b [*b]\n", 2),
        ("sam3:\n  detection_prompt: &p person\nrepair: {}\ncamera:\n  ckpt_path: *p\n", 2),
    ],
)
def test_yaml_anchors_and_bombs_are_refused_fast(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert time.perf_counter() - start < 2.0
    (problem,) = err.value.problems
    assert problem == (
        f"{path} uses a YAML anchor or alias at line {line}: write the values out (configs may not use & or *)"
    )


def test_shipped_configs_use_no_anchors() -> None:
    from body4d.config import DEFAULT_CONFIG, _parse_yaml

    for path in DEFAULT_CONFIG.parent.glob("*.yaml"):
        assert _parse_yaml(path.read_text(encoding="utf-8")), path


def test_alias_in_a_set_override_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["app.host=&a [*a]"], env={})
    assert err.value.problems == [
        "override 'app.host=&a [*a]' uses a YAML anchor or alias at line 1: write the values out "
        "(configs may not use & or *)"
    ]


def test_config_file_problems_are_config_errors(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as err:  # a list plus an override: was a TypeError from OmegaConf
        load_config(listed, overrides=["video.crf=3", "video=[1,2]"], env={})
    assert err.value.problems == [
        "the config must be a mapping of sections (paths:, runtime:, ...)",
        "video must be a mapping of keys, got list",
    ]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("video:\n  folder_fps: 25  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml cannot be read \('utf-8' codec can't decode"):
        load_config(latin, env={})
    big = tmp_path / "big.yaml"
    big.write_text("video:\n  crf: 18\n" + "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(
        ConfigError, match=f"big.yaml is {big.stat().st_size} bytes, more than the {MAX_CONFIG_BYTES}"
    ):
        load_config(big, env={})


def test_a_huge_value_is_quoted_short(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text("video:\n  crf: [" + ", ".join(["1"] * 50_000) + "]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    (problem,) = err.value.problems
    assert problem == "video.crf = " + "[" + "1, " * 25 + "1... must be an integer"
