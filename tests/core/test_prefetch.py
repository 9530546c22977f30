"""xopt.prefetch: order kept, the producer's exception raised in the consumer, the producer
stopped and joined when the consumer stops early, and work overlapped."""
from __future__ import annotations

import threading

import pytest

from xopt.prefetch import prefetched


def test_order_and_every_item():
    assert list(prefetched(range(1000), depth=3)) == list(range(1000))
    assert list(prefetched([], depth=1)) == []


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise KeyError("decoder broke")

    got = []
    with pytest.raises(KeyError, match="decoder broke"):
        for x in prefetched(items()):
            got.append(x)
    assert got == [1, 2]


def test_closing_the_consumer_stops_the_producer_and_runs_its_cleanup():
    produced, closed = [], threading.Event()

    def items():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = prefetched(items(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed.is_set()  # joined: the generator's finally has run before close() returned
    assert len(produced) <= 3 + 2 + 1  # at most depth (and the one in hand) ahead
    assert not [t for t in threading.enumerate() if t.name == "xopt-prefetch"]


def test_the_producer_runs_ahead_while_the_consumer_holds_an_item():
    produced = []
    ahead = threading.Event()

    def items():
        for i in range(10):
            produced.append(i)
            if len(produced) >= 3:
                ahead.set()
            yield i

    it = prefetched(items(), depth=4)
    assert next(it) == 0
    assert ahead.wait(5.0)  # items 1 and 2 were made while item 0 was still in the consumer's hands
    assert list(it) == list(range(1, 10))
