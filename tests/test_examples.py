from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from body4d.config import REPO_ROOT, Config, load_config
from body4d.examples import (
    Example,
    ExamplesError,
    fetch_hint,
    file_sha256,
    gallery_items,
    load_examples,
    missing_examples,
)

PINNED_URL = re.compile(
    r"^https://raw\.githubusercontent\.com/gaomingqi/sam-body4d/[0-9a-f]{40}/assets/examples/example[123]\.mp4$"
)


def entry(file: str, data: bytes, url: str | None = None, **changes: Any) -> dict[str, Any]:
    """An examples-list entry for a clip of bytes ``data`` (downloaded from ``url`` when given)."""
    item: dict[str, Any] = {
        "caption": Path(file).stem.title(),
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "description": "test clip",
        "licence": "MIT",
        "attribution": "body4d tests",
    }
    if url is not None:
        item["url"] = url
    return item | changes


def examples_config(tmp_path: Path, entries: list[dict[str, Any]]) -> Config:
    """The default config with ``app.examples_list`` = a list of ``entries`` and ``app.examples_dir`` =
    ``tmp_path/examples``."""
    listed = tmp_path / "examples.yaml"
    listed.write_text(yaml.safe_dump({"examples": entries}, sort_keys=False))
    return load_config(
        overrides={"app.examples_list": str(listed), "app.examples_dir": str(tmp_path / "examples")}, env={}
    )


def test_gallery_lists_present_clips_of_the_right_size_in_list_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "examples"
    (folder / "downloads").mkdir(parents=True)
    (folder / "shipped.mp4").write_bytes(b"shipped")
    (folder / "downloads" / "b.mp4").write_bytes(b"bbb")
    (folder / "downloads" / "short.mp4").write_bytes(b"cut")
    cfg = examples_config(
        tmp_path,
        [
            entry("downloads/b.mp4", b"bbb", "https://example.org/b.mp4", caption="Bee"),
            entry("shipped.mp4", b"shipped"),
            entry("downloads/absent.mp4", b"absent", "https://example.org/absent.mp4"),
            entry("downloads/short.mp4", b"cut short", "https://example.org/short.mp4"),
            entry("gone.mp4", b"gone"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="body4d.examples"):
        items = gallery_items(cfg)
    assert items == [(folder / "downloads" / "b.mp4", "Bee"), (folder / "shipped.mp4", "Shipped")]
    assert f"shipped example {folder / 'gone.mp4'} is missing or not 4 bytes" in caplog.text
    missing = missing_examples(cfg)
    assert [e.file for e in missing] == ["downloads/absent.mp4", "downloads/short.mp4"]
    assert fetch_hint(len(missing)) == "run `python scripts/setup.py --examples` to fetch 2 more examples"
    assert fetch_hint(1) == "run `python scripts/setup.py --examples` to fetch 1 more example"
    assert fetch_hint(0) == ""


def test_entries_load_with_their_fields(tmp_path: Path) -> None:
    cfg = examples_config(tmp_path, [entry("a.mp4", b"a", "http://127.0.0.1:1/a.mp4")])
    (example,) = load_examples(cfg.app.examples_list)
    assert example == Example(
        caption="A",
        file="a.mp4",
        sha256=hashlib.sha256(b"a").hexdigest(),
        size=1,
        description="test clip",
        licence="MIT",
        attribution="body4d tests",
        url="http://127.0.0.1:1/a.mp4",
    )
    assert example.path(cfg) == tmp_path / "examples" / "a.mp4"


def test_every_bad_entry_is_named_with_its_file_in_one_error(tmp_path: Path) -> None:
    good = entry("ok.mp4", b"ok")
    listed = tmp_path / "bad.yaml"
    listed.write_text(
        yaml.safe_dump(
            {
                "examples": [
                    good,
                    {k: v for k, v in entry("nosize.mp4", b"x").items() if k != "size"} | {"colour": "red"},
                    entry("hash.mp4", b"x", sha256="ABC"),
                    entry("/abs/clip.mp4", b"x"),
                    entry("../up.mp4", b"x"),
                    entry("notes.txt", b"x", size=True),
                    entry("ftp.mp4", b"x", url="ftp://example.org/ftp.mp4", caption=""),
                    "just a string",
                    good,
                ]
            },
            sort_keys=False,
        )
    )
    with pytest.raises(ExamplesError) as info:
        load_examples(listed)
    message = str(info.value)
    assert message.startswith(f"11 problem(s) in the examples list {listed}:\n")
    for line in (
        "entry 2 (nosize.mp4): missing key size",
        "entry 2 (nosize.mp4): unknown key colour (valid: caption, file, sha256, size, description, "
        "licence, attribution, url)",
        "entry 3 (hash.mp4): sha256 must be 64 lowercase hex digits",
        "entry 4 (/abs/clip.mp4): file must be a relative POSIX path inside app.examples_dir",
        "entry 5 (../up.mp4): file must be a relative POSIX path inside app.examples_dir",
        "entry 6 (notes.txt): file must be a video (.mp4, ",
        "entry 6 (notes.txt): size must be a positive number of bytes",
        "entry 7 (ftp.mp4): caption must be a non-empty string",
        "entry 7 (ftp.mp4): url must start with https:// (or http://)",
        "entry 8 must be a mapping of caption, file, sha256, size, description, licence, attribution",
        "file ok.mp4 is listed 2 times: list each clip once",
    ):
        assert f"  - {line}" in message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("examples: [unclosed", "is not valid YAML"),
        ("- caption: x\n", "must be a mapping with one key, `examples:`, a list"),
        ("examples: {caption: x}\n", "must be a mapping with one key, `examples:`, a list"),
        ("examples: []\nextra: 1\n", "must be a mapping with one key, `examples:`, a list"),
    ],
)
def test_a_list_of_the_wrong_shape_is_refused_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    listed = tmp_path / "shape.yaml"
    listed.write_text(text)
    with pytest.raises(ExamplesError, match=re.escape(str(listed))) as info:
        load_examples(listed)
    assert match in str(info.value)


def test_a_missing_list_says_which_key_names_it(tmp_path: Path) -> None:
    with pytest.raises(ExamplesError, match="point app.examples_list at an existing YAML file"):
        load_examples(tmp_path / "none.yaml")


def test_the_shipped_list_parses_and_its_shipped_clip_is_in_the_repository() -> None:
    cfg = load_config(env={})
    assert Path(cfg.app.examples_list) == REPO_ROOT / "body4d" / "configs" / "examples.yaml"
    examples = load_examples(cfg.app.examples_list)
    shipped = [e for e in examples if e.url is None]
    downloaded = [e for e in examples if e.url is not None]
    assert [e.file for e in shipped] == ["street.mp4"]
    for example in shipped:
        path = example.path(cfg)
        assert path.is_file(), f"{path} is listed as shipped but is not in the repository"
        assert path.stat().st_size == example.size and file_sha256(path) == example.sha256
    assert [e.caption for e in downloaded] == ["Example 1", "Example 2", "Example 3"]
    for example in downloaded:
        assert PINNED_URL.match(str(example.url)), example.url
        assert example.file == f"downloads/{Path(str(example.url)).name}", "downloads are gitignored"
        assert example.licence == "MIT" and "Mingqi Gao" in example.attribution
    assert (REPO_ROOT / ".gitignore").read_text().count("/assets/examples/downloads/") == 1
    assert len({e.sha256 for e in examples}) == len(examples)
