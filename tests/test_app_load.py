"""Four `gradio_client` sessions at once on the real `app.py` (tiny checkpoints): each uploads a
clip and runs the whole pipeline; the GPU queue serves them in arrival order; no session reaches
another's targets, runs or files; the served zip exists once on disk; and the app cleans old
runs and uploads (`app.retention_*`) when it starts.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from body4d.config import load_config
from body4d.recipe import STAGES
from body4d.video import encode_video
from tests.app_server import serve
from tests.test_app_api import RUN_TIMEOUT_S, call, client
from tests.test_app_handlers import CLIP_FPS, PERSON_X, PERSON_Y, person_frames
from tests.test_retention import cache_entry, make_run

pytestmark = pytest.mark.app

SESSIONS = 4
# Hours the app under test keeps runs (its cache keeps the default 24 h).
RUN_HOURS = 48
# Seconds the clean at start may take (a background thread, started before the server answers).
START_CLEAN_TIMEOUT_S = 10
# Seconds to wait for a submitted job to reach the server's queue (it is a local server).
JOIN_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def load_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on tiny real test checkpoints and a small walker clip, started on an outputs folder
    holding a 100-hour-old run and cache entry (retention keeps runs for `RUN_HOURS`)."""
    from body4d.testing.tiny_checkpoints import write_all

    root = tmp_path_factory.mktemp("load_app")
    write_all(root / "ckpt")
    clip = encode_video(person_frames(), root / "walker.mp4", CLIP_FPS)
    out = root / "out"
    old_run = make_run(out, load_config(env={}), hours=100).root
    old_upload = cache_entry(out / ".gradio_cache", "old.mp4", hours=100)
    with serve(root, root / "ckpt", ["--set", f"app.retention_run_hours={RUN_HOURS}"]) as served:
        yield {**served, "clip": clip, "old": [old_run, old_upload]}


def queued(c: Client, endpoint: str, **kwargs: Any) -> Any:
    """Submit ``endpoint`` and return its job once the server has queued it (arrival is ordered)."""
    job = c.submit(api_name=endpoint, **kwargs)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while job.status().code in (Status.STARTING, Status.JOINING_QUEUE):
        assert time.monotonic() < deadline, f"{endpoint} did not reach the queue"
        time.sleep(0.02)
    return job


def targets(session: int) -> int:
    """How many targets session ``session`` clicks: 1 or 2 (every person costs a reconstruction)."""
    return session % 2 + 1


def raw_call(url: str, endpoint: str, data: list[Any]) -> str:
    """The server-sent events of one call of ``endpoint`` over Gradio's REST API (no client)."""
    event = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}).json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{endpoint}/{event}", timeout=RUN_TIMEOUT_S).text


def manifest(out: Path, run_id: str) -> dict[str, Any]:
    return json.loads((out / run_id / "manifest.json").read_text())


def test_retention_cleans_old_runs_and_uploads_at_start(load_app) -> None:
    deadline = time.monotonic() + START_CLEAN_TIMEOUT_S
    while any(p.exists() for p in load_app["old"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(p.exists() for p in load_app["old"]), load_app["old"]
    assert "retention: deleted run" in Path(load_app["log"]).read_text()


def test_four_sessions_run_at_once_fairly_and_apart(load_app, tmp_path: Path) -> None:
    out = Path(load_app["out"])
    clients = [client(load_app, tmp_path / f"s{i}") for i in range(SESSIONS)]

    def prepare(i: int) -> str:
        c = clients[i]
        run_id = call(c, "/open_video", handle_file(load_app["clip"]))["run_id"]
        for t in range(targets(i)):  # each session sees only its own targets
            added = call(c, "/add_points", frame=0, points=[[PERSON_X - 8 * t, PERSON_Y, True]])
        assert added["targets"] == [{"id": t + 1, "clicks": 1} for t in range(targets(i))]
        return run_id

    with ThreadPoolExecutor(SESSIONS) as pool:  # four uploads and prompts at once
        run_ids = list(pool.map(prepare, range(SESSIONS)))
    assert len(set(run_ids)) == SESSIONS, "every session has its own run"

    # Every session's first job, then every session's second job, in this arrival order.
    firsts = [queued(c, "/segment") for c in clients]
    seconds = [queued(c, "/reconstruct") for c in clients]
    masks = [job.result(timeout=RUN_TIMEOUT_S) for job in firsts]
    made = [job.result(timeout=RUN_TIMEOUT_S) for job in seconds]

    for i, (run_id, m, r) in enumerate(zip(run_ids, masks, made, strict=True)):
        assert m["run_id"] == r["run_id"] == run_id
        assert m["targets"] == list(range(1, targets(i) + 1)), "a session's masks are of its own targets"
        assert all(state == "done" for state in r["stages"].values()), r["stages"]
        with zipfile.ZipFile(r["zip"]) as zf:
            assert {Path(n).parts[0] for n in zf.namelist()} == {run_id}, "a zip holds its own run only"
        assert call(clients[i], "/results")["run_id"] == run_id

    # The GPU queue is first come, first served: the stages of the jobs started in arrival order,
    # and no session's second job overtook another session's first.
    starts = [manifest(out, run_id)["stages"] for run_id in run_ids]
    mask_starts = [st["masks"]["started"] for st in starts]
    later = STAGES[STAGES.index("masks") + 1]
    body_starts = [st[later]["started"] for st in starts]
    assert mask_starts == sorted(mask_starts) and body_starts == sorted(body_starts)
    assert max(mask_starts) < min(body_starts), (mask_starts, body_starts)

    # The served zip exists once on disk (in its run folder), and it downloaded.
    for run_id, r in zip(run_ids, made, strict=True):
        zip_name = f"body4d_{run_id}.zip"
        on_server = list(out.rglob(zip_name))
        assert on_server == [out / run_id / zip_name], on_server
        assert Path(r["zip"]).stat().st_size == on_server[0].stat().st_size


def test_a_session_cannot_reach_another_sessions_runs_or_files(load_app, tmp_path: Path) -> None:
    out = Path(load_app["out"])
    a, b = client(load_app, tmp_path / "a"), client(load_app, tmp_path / "b")
    run_a = call(a, "/open_video", handle_file(load_app["clip"]))["run_id"]
    run_b = call(b, "/open_video", handle_file(load_app["clip"]))["run_id"]
    call(a, "/add_points", frame=0, points=[[PERSON_X, PERSON_Y, True]])
    mask_video = Path(call(a, "/segment")["mask_video"])
    served = out / run_a / mask_video.name
    assert served.is_file()

    # By run id: A's run, and traversal, are refused; B's own runs are fine.
    assert call(b, "/results", run_id=run_b)["run_id"] == run_b
    assert call(a, "/results", run_id=run_a)["stages"]["masks"] == "done"
    for foreign in (run_a, f"../{run_a}", "../../etc"):
        with pytest.raises(AppError, match=rf"/results: run '{foreign}' is not one of this session's runs"):
            call(b, "/results", run_id=foreign)

    # By path, as an input (raw HTTP: gradio_client would upload a local file): not an upload.
    for path in (served, out / run_b / ".." / run_a / "manifest.json"):
        answer = raw_call(
            load_app["url"], "open_video", [{"path": str(path), "meta": {"_type": "gradio.FileData"}}]
        )
        assert (
            "event: error" in answer
            and f"/open_video: {path.name} is not a file uploaded to this app" in answer
        )
    assert call(b, "/results")["run_id"] == run_b, "a refused open leaves the session as it was"

    # By path, over the file route: A's client downloads its file, B's and a stranger are refused.
    url = f"{load_app['url']}gradio_api/file={served}"
    assert httpx.get(url, cookies=a.cookies).content == served.read_bytes()
    traversal = f"{load_app['url']}gradio_api/file={out / run_b / '..' / run_a / served.name}"
    for cookies in (b.cookies, {}):
        for target in (url, traversal):
            refused = httpx.get(target, cookies=cookies)
            assert refused.status_code == 403, (target, refused.status_code)
            assert f"is in run {run_a}, which is not one of this session's runs" in refused.text
