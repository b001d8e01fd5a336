"""One pair, several threads: each generation whole, never interleaved, served in the order asked;
``wait=False`` says the pair is busy; closing the pair stops the generation running elsewhere."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgespec import Pair
from edgespec.access import FifoLock
from edgespec.errors import EdgespecError, PairBusyError

GREEDY = {"temperature": 0.0, "max_tokens": 40, "strategy": "draft"}


@pytest.fixture
def pair(tiny: dict[str, Path]) -> Iterator[Pair]:
    with Pair(tiny["target"], tiny["draft-noisy"], n_ctx=512, n_threads=1, max_draft=4) as p:
        yield p


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_two_threads_on_one_pair_get_whole_uninterleaved_replies(pair: Pair) -> None:
    prompts = ["hello world", "a"]
    want = {p: pair.generate(p, **GREEDY).token_ids for p in prompts}
    order: list[str] = []
    got: dict[str, list[int]] = {}

    def run(prompt: str) -> None:
        for _ in range(3):
            with pair.stream(prompt, **GREEDY) as gen:
                for _event in gen:
                    order.append(prompt)
                    time.sleep(0.0005)  # give the other thread every chance to cut in
            assert gen.result.token_ids == want[prompt]
            got[prompt] = gen.result.token_ids

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    # Each generation's events form one run: six runs, never a mix.
    runs = [order[0]] + [b for a, b in itertools.pairwise(order) if a != b]
    assert len(runs) <= 6


def test_requests_are_served_in_the_order_they_asked(pair: Pair) -> None:
    first = pair.stream("hello world", **GREEDY)  # holds the pair until closed
    served: list[int] = []

    def run(i: int) -> None:
        pair.generate("a", **GREEDY)
        served.append(i)

    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=run, args=(i,)))
        threads[-1].start()
        until(lambda i=i: pair.access._lock.waiting == i + 1)  # each one queued before the next asks
    first.close()
    for t in threads:
        t.join()
    assert served == [0, 1, 2, 3]


def test_a_fifo_lock_is_released_by_any_thread_and_can_be_tried() -> None:
    lock = FifoLock()
    assert lock.acquire() and not lock.acquire(blocking=False)
    threading.Thread(target=lock.release).start()
    until(lambda: not lock.locked)
    assert lock.acquire(blocking=False)


def test_wait_false_says_at_once_that_the_pair_is_busy(pair: Pair) -> None:
    running = pair.stream("hello world", **GREEDY)
    errors: list[Exception] = []

    def ask() -> None:
        try:
            pair.stream("a", **GREEDY, wait=False)
        except PairBusyError as exc:
            errors.append(exc)

    t = threading.Thread(target=ask)
    t.start()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    assert "\n" not in str(errors[0]) and "another request" in str(errors[0])
    running.close()
    with pair.stream("a", **GREEDY, wait=False) as gen:  # free again
        assert list(gen)


def test_a_generation_left_unfinished_by_its_thread_gives_way_to_its_next(pair: Pair) -> None:
    want = pair.generate("a", **GREEDY).token_ids
    gen = pair.stream("hello world", **GREEDY)
    for _ in gen:
        break  # left suspended, as a loop left with break leaves it
    assert pair.generate("a", **GREEDY).token_ids == want  # no deadlock: the first gave way
    assert gen.result.finish_reason == "interrupted"


def test_a_generation_dropped_unfinished_lets_the_pair_go(pair: Pair) -> None:
    def start_and_drop() -> None:
        gen = pair.stream("hello world", **GREEDY)
        next(iter(gen))
        del gen  # never finished, never closed

    t = threading.Thread(target=start_and_drop)
    t.start()
    t.join()
    gc.collect()  # a generation refers to itself through its pipeline: collected with cycles
    with pair.stream("a", **GREEDY, wait=False) as gen:  # no PairBusyError: it let go when collected
        assert list(gen)


def test_closing_the_pair_stops_a_generation_on_another_thread(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], n_ctx=512, n_threads=1)
    started = threading.Event()
    results = []

    def run() -> None:
        gen = pair.stream("hello world", temperature=0, max_tokens=400, strategy="none")
        for _ in gen:
            started.set()
            time.sleep(0.005)
        results.append(gen.result)

    t = threading.Thread(target=run)
    t.start()
    started.wait(10)
    pair.close()  # returns once the generation has let go: its contexts are freed after
    t.join(10)
    assert results and results[0].finish_reason == "interrupted" and len(results[0].token_ids) < 400
    with pytest.raises(EdgespecError, match="closed"):
        pair.generate("a", strategy="none")
