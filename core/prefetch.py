"""Run a producer ahead of its consumer on a thread of its own, through a bounded queue, so that
decoding, inference and encoding of a video overlap instead of taking turns (PyAV and ONNX
Runtime release the GIL while they work). Order is kept, an exception in the producer is raised
in the consumer, and closing the consumer's iterator stops and joins the producer thread."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetched(items: Iterable[T], depth: int = 4, name: str = "xopt-prefetch") -> Iterator[T]:
    """The items of `items`, produced on a background thread at most `depth` ahead."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a generator's own clean-up runs on the thread that ran it
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            obj = q.get()
            if obj is _END:
                return
            if isinstance(obj, _Raised):
                raise obj.exc
            yield obj
    finally:
        stop.set()
        worker.join()
