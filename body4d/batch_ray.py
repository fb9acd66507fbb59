"""``body4d batch --ray``: the batch's videos spread over the workers of a Ray cluster.

Each worker is a Ray actor (`VideoWorker`) that reserves ``--gpus-per-video`` GPUs, loads the
models once and then runs one video at a time with `body4d.batch.process_video`, writing its run
folder straight into the output folder, which every node must share (NFS, GCS-fuse, ...); only
the small `VideoResult` travels back to the driver, which hands the next video to the first free
worker and runs a failed one again (`body4d.batch.should_retry`) on whichever worker is free.
The inputs, the checkpoints (``paths.ckpt_root``) and the output folder must be at the same paths
on every node. Needs the ``ray`` extra (``pip install 'body4d[ray]'``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from body4d.batch import (
    BatchItem,
    VideoResult,
    model_needs,
    process_video,
    retried,
    should_retry,
)
from body4d.errors import EXIT_INTERRUPTED, InputError, exit_code

if TYPE_CHECKING:
    from body4d.config import Config

log = logging.getLogger(__name__)

# CPUs each worker reserves besides its GPUs: video decoding and encoding run beside the networks.
CPUS_PER_WORKER = 1
# A worker whose process died (a crashed driver, the node's OOM killer) is started again this many
# times, reloading its models; its video counts as failed and is retried like any other failure.
MAX_WORKER_RESTARTS = 2


class VideoWorker:
    """A Ray actor: the models loaded once, then one video per `process` call.

    Args:
        cfg: the configuration (the same paths must exist on the worker's node).
        needs: `body4d.driver.load_models` flags (`body4d.batch.model_needs`).
    """

    def __init__(self, cfg: Config, needs: dict[str, bool]) -> None:
        from transformers.utils import logging as hf_logging

        from body4d.driver import load_models

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        hf_logging.disable_progress_bar()  # worker logs reach the driver: one line per event
        self.cfg = cfg
        # A worker that cannot load its models (e.g. checkpoints missing on its node) reports
        # that as every video's result instead of dying, so that the reason reaches the summary.
        self.load_error: tuple[int, str] | None = None
        try:
            self.models = load_models(cfg, **needs)
        except Exception as exc:
            log.exception("worker could not load its models")
            self.load_error = (exit_code(exc), " ".join(str(exc).split()) or type(exc).__name__)

    def process(self, item: BatchItem, output_dir: str, stop_after: str, resume: str | None) -> VideoResult:
        """`body4d.batch.process_video` with this worker's models."""
        if self.load_error is not None:
            code, error = self.load_error
            return VideoResult(str(item.video), code, error=f"worker could not load its models: {error}")
        return process_video(item, self.cfg, self.models, Path(output_dir), stop_after, resume)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InputError("--ray needs the Ray package: pip install 'body4d[ray]' (on every node)") from exc
    return ray


def worker_count(ray: Any, gpus_per_video: float, workers: int | None, n_videos: int) -> int:
    """How many workers to start: ``workers``, else as many as the cluster's GPUs hold (1 for CPU
    workers), never more than there are videos.

    Raises:
        InputError: a negative GPU share or worker count, or GPUs asked of a cluster without any.
    """
    if gpus_per_video < 0 or (workers is not None and workers < 1):
        raise InputError("--gpus-per-video must be >= 0 and --workers >= 1")
    if workers is None:
        if gpus_per_video == 0:
            workers = 1
        else:
            gpus = ray.cluster_resources().get("GPU", 0)
            workers = int(gpus // gpus_per_video)
            if workers == 0:
                raise InputError(
                    f"the Ray cluster has {gpus:g} GPUs, fewer than --gpus-per-video {gpus_per_video:g}: "
                    "join GPU nodes (ray start --address ... on each) or pass --gpus-per-video 0 for CPU workers"
                )
    return max(1, min(workers, n_videos))


def run_on_ray(
    items: Sequence[BatchItem],
    cfg: Config,
    output_dir: Path,
    stop_after: str,
    *,
    address: str,
    gpus_per_video: float = 1.0,
    workers: int | None = None,
) -> list[VideoResult]:
    """Process ``items`` on the Ray cluster at ``address`` (used as it is if this process is
    already connected to one), one video per worker at a time, retrying failures once.

    Args:
        items: the videos.
        cfg: the configuration, sent to every worker.
        output_dir: the shared parent of the run folders.
        stop_after: last stage.
        address: ``auto``, ``host:port`` or ``ray://host:port``.
        gpus_per_video: GPUs each worker reserves (0: CPU workers).
        workers: how many workers (`worker_count`).

    Returns:
        One `VideoResult` per item, in order.

    Raises:
        InputError: Ray is missing, or the cluster cannot host a worker.
    """
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        except ConnectionError as exc:
            raise InputError(
                f"no Ray cluster at {address} ({exc}): start one with `ray start --head` "
                "or pass its address (host:6379)"
            ) from exc
    try:
        n = worker_count(ray, gpus_per_video, workers, len(items))
        actor = ray.remote(
            num_gpus=gpus_per_video, num_cpus=CPUS_PER_WORKER, max_restarts=MAX_WORKER_RESTARTS
        )(VideoWorker)
        needs = model_needs(cfg, stop_after, items)
        pool = [actor.remote(cfg, needs) for _ in range(n)]
        log.info("%d Ray worker(s) for %d video(s), %g GPU(s) each", n, len(items), gpus_per_video)
        return _dispatch(ray, pool, items, str(output_dir), stop_after)
    finally:
        if started_here:
            ray.shutdown()


def _dispatch(
    ray: Any, pool: list[Any], items: Sequence[BatchItem], output_dir: str, stop_after: str
) -> list[VideoResult]:
    """Hand each video (and each retry) to the next free worker until all are finished."""
    queue: deque[tuple[int, VideoResult | None]] = deque((i, None) for i in range(len(items)))
    idle = list(pool)
    pending: dict[Any, tuple[Any, int, VideoResult | None]] = {}
    results: dict[int, VideoResult] = {}
    try:
        while queue or pending:
            while queue and idle:
                index, previous = queue.popleft()
                worker = idle.pop()
                resume = previous.run_id if previous else None
                ref = worker.process.remote(items[index], output_dir, stop_after, resume)
                pending[ref] = (worker, index, previous)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            worker, index, previous = pending.pop(ref)
            idle.append(worker)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died or Ray lost the task
                error = " ".join(str(exc).split())
                log.error("Ray worker failed on %s: %s", items[index].video, error)
                result = VideoResult(
                    str(items[index].video), exit_code(exc), error=f"Ray worker failed: {error}"
                )
            if previous is not None:
                result = retried(previous, result)
            if should_retry(result):
                log.warning("%s %s (%s): retrying it", result.video, result.status, result.error)
                queue.append((index, result))
            else:
                results[index] = result
    except KeyboardInterrupt:  # the workers stop with the Ray session (or their handles)
        for index in range(len(items)):
            results.setdefault(
                index,
                VideoResult(
                    str(items[index].video),
                    EXIT_INTERRUPTED,
                    attempts=0,
                    error="not finished: the batch was interrupted",
                ),
            )
    return [results[i] for i in range(len(items))]
