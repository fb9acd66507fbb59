"""Deep checkpoint verification (body4d.checkpoint_verify) and the modes of scripts/setup.py built on it:
``--check``, ``--only``, ``--from`` and the gated-repository message, on real tiny checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from body4d.checkpoint_verify import HUB_METADATA_DIR, Published, check_file, hub_sha256
from body4d.examples import file_sha256
from tests.fake_hub import FakeHub, FakeHubServer
from tests.test_setup_script import _copy_tiny, _run

ALL = (
    "sam3",
    "sam-3d-body-dinov3",
    "moge-2-vitl-normal",
    "diffusion-vas-amodal-segmentation",
    "diffusion-vas-content-completion",
    "depth-anything-v2-large-hf",
)


def _rows(log: str) -> dict[str, str]:
    """The verdict table's rows by checkpoint name."""
    names = ("sam3", "sam-3d-body", "moge", "vas-amodal", "vas-completion", "depth")
    return {line.split()[0]: line for line in log.splitlines() if line.split() and line.split()[0] in names}


def test_published_size_and_hash_are_checked(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"released bytes")
    right = Published(14, file_sha256(tmp_path / "model.ckpt"))
    assert "not a readable PyTorch file of tensors" in check_file(tmp_path, "model.ckpt", right).problem
    torch.save({"w": torch.ones(2)}, tmp_path / "model.ckpt")
    size = (tmp_path / "model.ckpt").stat().st_size
    good = check_file(tmp_path, "model.ckpt", Published(size, file_sha256(tmp_path / "model.ckpt")))
    assert good.problem == "" and "size and SHA-256 of the release" in good.notes
    assert (
        f"{size:,} bytes, the released file has 5 (truncated?)"
        in check_file(tmp_path, "model.ckpt", Published(5, "0" * 64)).problem
    )
    wrong = check_file(tmp_path, "model.ckpt", Published(size, "a" * 64))
    assert wrong.problem.startswith("SHA-256 ") and "is not the released file's aaaaaaaaaaaa" in wrong.problem
    tiny = check_file(tmp_path, "model.ckpt", Published(5, "a" * 64), tiny=True)
    assert tiny.problem == "" and tiny.notes == (
        "tiny test checkpoint: its published size and SHA-256 do not apply",
    )


def test_the_hub_sha256_recorded_at_download_catches_a_corrupt_file(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(3)}, tmp_path / "model.safetensors")
    meta = tmp_path / HUB_METADATA_DIR / "model.safetensors.metadata"
    meta.parent.mkdir(parents=True)
    meta.write_text(f"{'c' * 40}\n{file_sha256(tmp_path / 'model.safetensors')}\n1.0\n")
    assert hub_sha256(tmp_path, "model.safetensors") == file_sha256(tmp_path / "model.safetensors")
    ok = check_file(tmp_path, "model.safetensors")
    assert ok.problem == "" and ok.notes == ("SHA-256 the Hub gave",)
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the tensor data: the header still reads
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    assert "(corrupt download)" in check_file(tmp_path, "model.safetensors").problem
    meta.write_text(f"{'c' * 40}\n{'b' * 40}\n1.0\n")  # a git (non-LFS) ETag is no SHA-256
    assert hub_sha256(tmp_path, "model.safetensors") is None


def test_content_checks_name_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    assert check_file(tmp_path, "config.json").problem.startswith("not valid JSON")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    assert check_file(tmp_path, "model.safetensors").problem.startswith("unreadable safetensors header")
    torch.save({"note": "no tensors"}, tmp_path / "model.pt")
    assert check_file(tmp_path, "model.pt").problem == "a PyTorch file without tensors"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "mhr_model.pt")
    assert check_file(tmp_path, "mhr_model.pt").problem == ""
    (tmp_path / "empty.pt").write_bytes(b"")
    assert check_file(tmp_path, "empty.pt").problem == "empty file (an interrupted download?)"
    assert check_file(tmp_path, "absent.pt").problem == "missing"


def test_check_on_an_empty_root_lists_everything_missing_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = _run(["--check", "--ckpt-root", str(tmp_path / "none"), "--with-completion"], home)
    assert res.returncode == 1
    rows = _rows(res.stdout + res.stderr)
    assert set(rows) == {"sam3", "sam-3d-body", "moge", "vas-amodal", "vas-completion", "depth"}
    assert all(" MISSING " in row for row in rows.values()), rows
    assert not (tmp_path / "none").exists() and not home.exists(), "--check writes nothing"


def test_check_finds_a_broken_file_among_verified_ones(tmp_path: Path, tiny_ckpt_root: Path) -> None:
    root = tmp_path / "ckpts"
    _copy_tiny(tiny_ckpt_root, root, *ALL)
    ok = _run(["--check", "--ckpt-root", str(root), "--with-completion"], tmp_path / "home")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(" ok " in row for row in _rows(ok.stdout + ok.stderr).values())
    (root / "sam3" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken header}")
    bad = _run(["--check", "--ckpt-root", str(root), "--with-completion"], tmp_path / "home")
    assert bad.returncode == 1
    rows = _rows(bad.stdout + bad.stderr)
    assert " BROKEN " in rows["sam3"] and "model.safetensors: unreadable safetensors header" in rows["sam3"]
    assert " ok " in rows["sam-3d-body"] and " ok " in rows["depth"]


def test_from_a_folder_installs_only_what_is_asked_and_verifies_it(
    tmp_path: Path, tiny_ckpt_root: Path
) -> None:
    mirror = tmp_path / "mirror"
    _copy_tiny(tiny_ckpt_root, mirror, *ALL)
    root = tmp_path / "ckpts"
    args = ["--ckpt-root", str(root), "--from", str(mirror)]
    res = _run([*args, "--only", "moge", "vas-amodal"], tmp_path / "home")
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(_rows(res.stdout + res.stderr)) == {"moge", "vas-amodal"}
    assert (root / "moge-2-vitl-normal" / "model.pt").read_bytes() == (
        mirror / "moge-2-vitl-normal" / "model.pt"
    ).read_bytes()
    assert (root / "diffusion-vas-amodal-segmentation" / "unet" / "config.json").is_file()
    assert not (root / "sam3").exists(), "--only copies nothing else"

    (mirror / "sam-3d-body-dinov3" / "model.ckpt").write_bytes(b"not a checkpoint")
    full = _run([*args, "--no-examples"], tmp_path / "home")
    assert full.returncode == 1
    rows = _rows(full.stdout + full.stderr)
    assert (
        " BROKEN " in rows["sam-3d-body"] and "model.ckpt: not a readable PyTorch file" in rows["sam-3d-body"]
    )
    assert " ok " in rows["sam3"] and " ok " in rows["moge"]
    assert "[SKIP] moge verified" in full.stdout + full.stderr


def test_a_missing_mirror_and_an_unknown_name_are_refused(tmp_path: Path) -> None:
    res = _run(
        ["--ckpt-root", str(tmp_path / "c"), "--from", str(tmp_path / "nowhere"), "--only", "moge"],
        tmp_path / "h",
    )
    assert res.returncode == 1
    assert "moge could not be copied from" in res.stderr and "FileNotFoundError" in res.stderr
    bad = _run(["--check", "--only", "sam4"], tmp_path / "h")
    assert bad.returncode == 2 and "invalid choice: 'sam4'" in bad.stderr and "sam-3d-body" in bad.stderr


REPOS = {
    "facebook/sam3": "sam3",
    "facebook/sam-3d-body-dinov3": "sam-3d-body-dinov3",
    "Ruicheng/moge-2-vitl-normal": "moge-2-vitl-normal",
}


@pytest.fixture
def hub(tiny_ckpt_root: Path) -> Iterator[FakeHub]:
    with FakeHubServer(FakeHub({repo: tiny_ckpt_root / folder for repo, folder in REPOS.items()})) as served:
        yield served


def _online(hub: FakeHub, **extra: str) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


def test_setup_downloads_from_the_hub_verifies_and_skips_on_the_next_run(
    tmp_path: Path, hub: FakeHub
) -> None:
    root = tmp_path / "ckpts"
    args = ["--ckpt-root", str(root), "--no-examples"]
    res = _run(args, tmp_path / "home", **_online(hub))
    assert res.returncode == 0, res.stdout + res.stderr
    for folder in REPOS.values():
        assert all(" ok " in row for row in _rows(res.stdout + res.stderr).values())
        assert (root / folder).is_dir()
    assert (root / "sam-3d-body-dinov3" / "assets" / "mhr_model.pt").is_file()
    assert "SHA-256 the Hub gave" in res.stdout + res.stderr
    n_gets = len(hub.gets("model.safetensors"))
    again = _run(args, tmp_path / "home", **_online(hub))
    assert again.returncode == 0 and "[SKIP] facebook/sam3 verified" in again.stderr
    assert len(hub.gets("model.safetensors")) == n_gets, "a verified checkpoint is not downloaded again"


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path: Path, hub: FakeHub) -> None:
    # huggingface_hub writes 10 MB chunks: the cut comes after two of them (the tiny model.ckpt is ~48 MB).
    hub.cut_after[("facebook/sam-3d-body-dinov3", "model.ckpt")] = 25_000_000
    args = ["--ckpt-root", str(tmp_path / "c"), "--only", "sam-3d-body"]
    res = _run(args, tmp_path / "home", **_online(hub))
    if res.returncode != 0:  # huggingface_hub gave up inside the first run: the next one resumes
        assert "[BLOCKED] facebook/sam-3d-body-dinov3 could not be downloaded" in res.stderr
        res = _run(args, tmp_path / "home", **_online(hub))
    assert res.returncode == 0, res.stdout + res.stderr
    ranges = [r for r in hub.gets("model.ckpt") if r]
    assert ranges and all(r.startswith("bytes=") and int(r[6:-1]) >= 10_000_000 for r in ranges), hub.requests
    assert " ok " in _rows(res.stderr + res.stdout)["sam-3d-body"]


def test_a_file_damaged_in_transit_is_caught_and_fetched_again(tmp_path: Path, hub: FakeHub) -> None:
    hub.corrupt.add(("Ruicheng/moge-2-vitl-normal", "model.pt"))
    args = ["--ckpt-root", str(tmp_path / "c"), "--only", "moge"]
    res = _run(args, tmp_path / "home", **_online(hub))
    assert res.returncode == 1
    row = _rows(res.stdout + res.stderr)["moge"]
    assert " BROKEN " in row and "model.pt: SHA-256" in row and "(corrupt download)" in row
    check = _run(["--check", *args], tmp_path / "home")
    assert check.returncode == 1 and "(corrupt download)" in _rows(check.stdout + check.stderr)["moge"]
    hub.corrupt.clear()  # the transfer is fine again: the broken file is downloaded again
    fixed = _run(args, tmp_path / "home", **_online(hub))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "(again: a file failed verification)" in fixed.stderr


@pytest.mark.parametrize("token", ["", "hf_test"])
def test_a_gated_repository_says_accept_the_licence_and_set_hf_token(
    tmp_path: Path, hub: FakeHub, token: str
) -> None:
    hub.gated.add("facebook/sam3")
    env = _online(hub, **({"HF_TOKEN": token} if token else {}))
    res = _run(["--ckpt-root", str(tmp_path / "c"), "--only", "sam3"], tmp_path / "home", **env)
    assert res.returncode == 1
    assert "[BLOCKED] facebook/sam3 is" in res.stderr
    assert "accept its licence at https://huggingface.co/facebook/sam3 and export HF_TOKEN" in res.stderr
    assert any(r[1].startswith("/api/models/facebook/sam3") for r in hub.requests)
