"""The app's named API through `gradio_client`, against the real `app.py` on tiny checkpoints.

Drives a scripted run (open_video, add_points, segment, reconstruct, results) and checks the
values and the downloaded files; then that two clients are two sessions, and that bad calls come
back as readable `AppError` sentences.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from body4d.video import encode_video, probe
from tests.app_server import serve
from tests.test_app_handlers import CLIP_FPS, CLIP_H, CLIP_T, CLIP_W, PERSON_X, PERSON_Y, person_frames

pytestmark = pytest.mark.app

# Seconds a pipeline call may take on CPU with the tiny models (a few seconds in practice).
RUN_TIMEOUT_S = 300
GLB_MAGIC = b"glTF"


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on tiny real test checkpoints (random weights, CPU) and a small walker clip."""
    from body4d.testing.tiny_checkpoints import write_all

    root = tmp_path_factory.mktemp("api_app")
    write_all(root / "ckpt")
    clip = encode_video(person_frames(), root / "walker.mp4", CLIP_FPS)
    with serve(root, root / "ckpt") as served:
        yield {**served, "clip": clip}


def client(app: dict[str, Any], downloads: Path) -> Client:
    """A new API client (a new session) downloading result files into ``downloads``."""
    return Client(str(app["url"]), download_files=str(downloads), verbose=False)


def call(c: Client, endpoint: str, *args: Any, **kwargs: Any) -> Any:
    """``endpoint``'s result, waiting at most `RUN_TIMEOUT_S`."""
    return c.submit(*args, api_name=endpoint, **kwargs).result(timeout=RUN_TIMEOUT_S)


def test_scripted_run_returns_values_and_downloads_valid_files(api_app, tmp_path: Path) -> None:
    c = client(api_app, tmp_path)
    endpoints = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/open_video", "/add_points", "/segment", "/reconstruct", "/results"} <= set(endpoints)

    info = call(c, "/open_video", handle_file(api_app["clip"]))
    assert (info["n_frames"], info["width"], info["height"], info["fps"]) == (CLIP_T, CLIP_W, CLIP_H, 10.0)
    assert info["run_id"] and "Loaded walker.mp4" in info["message"]

    added = call(c, "/add_points", frame=0, points=[[PERSON_X, PERSON_Y, True]])
    assert added["target"] == 1 and added["targets"] == [{"id": 1, "clicks": 1}]
    assert f"positive click at (x={PERSON_X}, y={PERSON_Y}) on frame 0" in added["message"]
    refined = call(c, "/add_points", frame=3, points=[[PERSON_X + 6, PERSON_Y + 20, True]], target=1)
    assert refined["targets"] == [{"id": 1, "clicks": 2}], "a given target is refined, not a new one"

    masks = call(c, "/segment")
    assert masks["run_id"] == info["run_id"] and masks["targets"] == [1]
    assert "Mask Generation done" in masks["message"]
    assert probe(Path(masks["mask_video"])).n_frames == CLIP_T

    made = call(c, "/reconstruct")
    assert made["run_id"] == info["run_id"] and made["meshes"] >= 1
    assert "4D Generation done" in made["message"] and "1 person" in made["message"]
    assert all(state == "done" for state in made["stages"].values()), made["stages"]

    res = call(c, "/results")
    run_id = info["run_id"]
    for files in (made, res):
        assert probe(Path(files["result_video"])).n_frames == CLIP_T
        assert Path(files["scene_glb"]).read_bytes()[:4] == GLB_MAGIC
        with zipfile.ZipFile(files["zip"]) as zf:
            names = set(zf.namelist())
        assert {f"{run_id}/bodies.npz", f"{run_id}/manifest.json", f"{run_id}/people/1/1.glb"} <= names
        with np.load(files["bodies"]) as bodies:
            assert bodies["obj_ids"].tolist() == [1]
        (person,) = files["people"]
        assert person["id"] == 1 and probe(Path(person["video"])).n_frames == CLIP_T
        assert Path(person["glb"]).read_bytes()[:4] == GLB_MAGIC
        assert Path(person["bvh"]).read_text().startswith("HIERARCHY")
        for key in ("npz", "json"):
            assert Path(person[key]).is_file() and Path(person[key]).name == f"1.{key}"
        assert Path(files["zip"]).is_relative_to(tmp_path), "files are downloaded to the client"
    # Served results are read from the run folder, not copied into Gradio's cache (disk).
    cache = Path(api_app["out"]) / ".gradio_cache"
    copies = [p.name for p in cache.rglob("*") if p.suffix in (".zip", ".glb", ".npz", ".bvh")]
    assert copies == [], f"results copied into the Gradio cache: {copies}"


def test_two_clients_are_two_sessions(api_app, tmp_path: Path) -> None:
    a, b = client(api_app, tmp_path / "a"), client(api_app, tmp_path / "b")
    run_a = call(a, "/open_video", handle_file(api_app["clip"]))["run_id"]
    call(a, "/add_points", frame=0, points=[[PERSON_X, PERSON_Y, True]])
    with pytest.raises(AppError, match="/results: no video loaded"):
        call(b, "/results")
    run_b = call(b, "/open_video", handle_file(api_app["clip"]))["run_id"]
    assert run_b != run_a
    assert call(b, "/add_points", frame=1, points=[[PERSON_X, PERSON_Y, True], [10, 10, False]])[
        "targets"
    ] == [{"id": 1, "clicks": 2}]
    assert call(a, "/add_points", frame=0, points=[[5, 5, True]])["targets"] == [
        {"id": 1, "clicks": 1},
        {"id": 2, "clicks": 1},
    ], "A's targets are A's own; points without a target start a new one"
    res_a, res_b = call(a, "/results"), call(b, "/results")
    assert (res_a["run_id"], res_b["run_id"]) == (run_a, run_b)
    assert res_b["stages"]["masks"] is None and res_b["zip"] is None and res_b["people"] == []


def test_bad_calls_come_back_as_readable_sentences(api_app, tmp_path: Path) -> None:
    c = client(api_app, tmp_path)
    with pytest.raises(AppError, match="/reconstruct: no video loaded: upload a video"):
        call(c, "/reconstruct")
    with pytest.raises(AppError, match="/add_points: no video loaded"):
        call(c, "/add_points", frame=0, points=[[1, 1, True]])
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(AppError, match="/open_video: notes.txt is not a video this app reads"):
        call(c, "/open_video", handle_file(notes))
    call(c, "/open_video", handle_file(api_app["clip"]))
    with pytest.raises(AppError, match=rf"point \({CLIP_W}, 5\) is outside the {CLIP_W}×{CLIP_H} frame"):
        call(c, "/add_points", frame=0, points=[[CLIP_W, 5, True]])
    with pytest.raises(AppError, match=rf"frame {CLIP_T} is outside the video: frames are 0 to {CLIP_T - 1}"):
        call(c, "/add_points", frame=CLIP_T, points=[[1, 1, True]])
    with pytest.raises(AppError, match=r"point \[1\] is not \[x, y, positive\]"):
        call(c, "/add_points", frame=0, points=[[1]])
    with pytest.raises(AppError, match="there is no target 7"):
        call(c, "/add_points", frame=0, points=[[1, 1, True]], target=7)
    with pytest.raises(AppError, match="/segment: no targets yet"):
        call(c, "/segment")
    assert call(c, "/results")["stages"]["masks"] is None, "refused calls leave the run as it was"


def test_pipeline_endpoints_refuse_without_models_and_name_the_missing_checkpoint(
    api_app, tmp_path: Path
) -> None:
    (tmp_path / "ckpt").mkdir()
    with serve(tmp_path, tmp_path / "ckpt") as bare:
        c = client(bare, tmp_path / "downloads")
        assert call(c, "/open_video", handle_file(api_app["clip"]))["n_frames"] == CLIP_T
        added = call(c, "/add_points", frame=0, points=[[PERSON_X, PERSON_Y, True]])
        assert added["targets"] == [{"id": 1, "clicks": 1}] and "No mask preview" in added["message"]
        with pytest.raises(AppError, match="/segment is unavailable: needs the SAM-3 checkpoint"):
            call(c, "/segment")
        with pytest.raises(AppError, match="/reconstruct is unavailable: needs the SAM-3 and SAM-3D-Body"):
            call(c, "/reconstruct")
