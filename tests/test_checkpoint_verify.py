"""Deep checkpoint verification (body4d.checkpoint_verify) and the modes of scripts/setup.py built on it:
``--check``, ``--only``, ``--from`` and the gated-repository message, on real tiny checkpoints."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from body4d.checkpoint_verify import HUB_METADATA_DIR, Published, check_file, hub_sha256
from body4d.examples import file_sha256
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
        " BROKEN " in rows["sam-3d-body"]
        and "model.ckpt: 16 bytes, the released file has 2,109,129,346" in rows["sam-3d-body"]
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


class _Gated(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub answers one for a gated repository without an accepted licence."""

    def _answer(self) -> None:
        body = json.dumps({"error": "Access to model facebook/sam3 is restricted."}).encode()
        self.send_response(403 if self.headers.get("Authorization") else 401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model facebook/sam3 is restricted.")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass


@pytest.fixture
def gated_hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("token", ["", "hf_test"])
def test_a_gated_repository_says_accept_the_licence_and_set_hf_token(
    tmp_path: Path, gated_hub: str, token: str
) -> None:
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": gated_hub, "HF_HUB_DISABLE_TELEMETRY": "1"}
    if token:
        env["HF_TOKEN"] = token
    res = _run(["--ckpt-root", str(tmp_path / "c"), "--only", "sam3"], tmp_path / "home", **env)
    assert res.returncode == 1
    assert "[BLOCKED] facebook/sam3 is" in res.stderr
    assert "accept its licence at https://huggingface.co/facebook/sam3 and export HF_TOKEN" in res.stderr
