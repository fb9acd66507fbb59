"""body4d.overlap: order, bounded memory, errors and early stops of the prefetcher and writer."""

from __future__ import annotations

import threading
import time

import pytest

from body4d.overlap import OrderedWriter, prefetch


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_order_and_runs_ahead_by_at_most_depth(depth: int) -> None:
    made: list[int] = []
    seen: list[tuple[int, int]] = []

    def produce():
        for i in range(20):
            made.append(i)
            yield i

    for item in prefetch(produce(), depth, "t-prefetch"):
        time.sleep(0.005)  # a slow consumer: the producer fills the queue meanwhile
        seen.append((item, len(made)))
    assert [i for i, _ in seen] == list(range(20))
    # made so far: the item in hand, up to `depth` queued and one more held by the blocked producer
    assert max(n - i for i, n in seen) <= depth + 2
    if depth == 0:
        assert all(n == i + 1 for i, n in seen), "depth 0 makes each item when it is asked for"
    assert not _threads("t-prefetch")


def test_prefetch_runs_the_producer_in_another_thread() -> None:
    where = [threading.current_thread().name for _ in prefetch(iter([1]), 0, "t-x")]
    assert where == ["MainThread"]
    names: list[str] = []

    def produce():
        names.append(threading.current_thread().name)
        yield 1

    assert list(prefetch(produce(), 2, "t-ahead")) == [1]
    assert names == ["t-ahead"]


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it() -> None:
    class Broken(Exception):
        pass

    def produce():
        yield 1
        yield 2
        raise Broken("frame 3 cannot be decoded")

    got = []
    with pytest.raises(Broken, match="frame 3"):
        for item in prefetch(produce(), 4, "t-err"):
            got.append(item)
    assert got == [1, 2]
    assert not _threads("t-err")


def test_stopping_early_stops_the_producer_and_runs_its_cleanup() -> None:
    made: list[int] = []
    closed = threading.Event()

    def produce():
        try:
            for i in range(10_000):
                made.append(i)
                yield i
        finally:
            closed.set()

    it = prefetch(produce(), 2, "t-stop")
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert closed.is_set(), "the generator's finally ran"
    assert len(made) <= 5
    assert not _threads("t-stop")


@pytest.mark.parametrize("depth", [0, 2])
def test_writer_runs_calls_in_order_and_waits_for_all(depth: int) -> None:
    done: list[int] = []
    with OrderedWriter(depth, "t-writer") as writer:
        for i in range(30):
            writer.submit(lambda i=i: (time.sleep(0.001), done.append(i)))
    assert done == list(range(30))
    assert not _threads("t-writer")


def test_writer_blocks_the_submitter_when_depth_calls_wait() -> None:
    release = threading.Event()
    started = threading.Event()
    submitted: list[int] = []

    def slow() -> None:
        started.set()
        release.wait(5)

    def submit_all(writer: OrderedWriter) -> None:
        writer.submit(slow)
        started.wait(5)
        for i in range(5):
            writer.submit(lambda: None)
            submitted.append(i)

    with OrderedWriter(2, "t-bound") as writer:
        t = threading.Thread(target=submit_all, args=(writer,))
        t.start()
        time.sleep(0.3)
        assert len(submitted) == 2, "two calls wait behind the running one; the third blocks"
        release.set()
        t.join(5)
    assert submitted == [0, 1, 2, 3, 4]


def test_a_write_error_is_raised_by_the_next_submit_and_later_calls_are_dropped() -> None:
    ran: list[int] = []

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), OrderedWriter(2, "t-fail") as writer:
        writer.submit(fail)
        time.sleep(0.2)
        writer.submit(lambda: ran.append(1))
    assert ran == []
    assert not _threads("t-fail")


def test_a_write_error_after_the_last_submit_is_raised_when_the_block_ends() -> None:
    def fail() -> None:
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"), OrderedWriter(4, "t-late") as writer:
        writer.submit(fail)


def test_an_error_in_the_block_drops_waiting_calls_and_is_the_one_raised() -> None:
    ran: list[int] = []
    gate = threading.Event()
    with pytest.raises(KeyError), OrderedWriter(8, "t-body") as writer:
        writer.submit(lambda: gate.wait(5))
        for i in range(5):
            writer.submit(lambda i=i: ran.append(i))
        gate.set()
        raise KeyError("the producer failed")
    assert len(ran) < 5
    assert not _threads("t-body")
