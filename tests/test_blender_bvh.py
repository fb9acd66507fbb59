"""Blender's BVH importer (Debian's Blender, headless) reads our BVH: every joint, every frame,
and its bones stand where our forward kinematics puts the joints."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from body4d.bvh import write_bvh
from tests.test_bvh import _synthetic, bvh_forward_kinematics, parse_bvh

INSPECT = Path(__file__).resolve().parent / "blender" / "inspect_bvh.py"
FRAMES = 6


def test_blender_imports_the_bvh_with_the_joints_where_fk_puts_them(tmp_path: Path) -> None:
    blender = shutil.which("blender")
    assert blender is not None, "blender is not installed: run `make setup` (Debian: apt-get install blender)"
    parents, names, pos, quat, rest, _, _ = _synthetic(n_frames=FRAMES)
    text = write_bvh(parents, names, pos, quat, 10.0, rest_rotations=rest)
    bvh_path, out = tmp_path / "person.bvh", tmp_path / "bvh.json"
    bvh_path.write_text(text)
    command = [blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(INSPECT)]
    proc = subprocess.run(
        [*command, "--", str(bvh_path), str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and out.is_file(), (
        f"blender failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    )
    got = json.loads(out.read_text())
    assert sorted(got["bones"]) == sorted(names) and got["frame_range"] == [1, FRAMES]
    parsed = parse_bvh(text)  # joints in the file's (depth-first) order
    order = [got["bones"].index(n) for n in parsed.names]  # Blender lists bones in its own order
    ours, _ = bvh_forward_kinematics(parsed)  # [T, J, 3] in the file's axes (Y up), cm
    # Blender's importer turns the file's Y-up axes into its Z-up ones: (x, y, z) -> (x, -z, y).
    expected = np.stack([ours[..., 0], -ours[..., 2], ours[..., 1]], axis=-1)
    heads = np.asarray(got["heads"])[:, order]
    assert heads.shape == expected.shape == (FRAMES, len(names), 3)
    assert np.abs(heads - expected).max() < 0.01  # cm: 0.1 mm
