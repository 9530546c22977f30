"""ORT session options from a manifest or a flag: bad ones are one-line user errors, before any
session exists (a thread count drawn from a hand-edited manifest once started 31,650 threads)."""
from __future__ import annotations

import os

import pytest

from xopt.errors import UserError
from xopt.runtime.backends.ort import max_threads, session_options

ort = pytest.importorskip("onnxruntime")


def test_thread_counts_within_the_machine_are_taken():
    so, _ = session_options(ort, intra_op_num_threads=2)
    assert so.intra_op_num_threads == 2
    so, _ = session_options(ort, intra_op_num_threads=max_threads())
    assert so.intra_op_num_threads == max_threads()
    assert max_threads() == max(64, 8 * (os.cpu_count() or 1))


@pytest.mark.parametrize("threads", [31650, 10 ** 9, -1, 2.5, True, "4"])
def test_absurd_thread_counts_are_refused_in_one_line(threads):
    with pytest.raises(UserError) as err:
        session_options(ort, intra_op_num_threads=threads)
    assert "\n" not in str(err.value) and "intra_op_num_threads" in str(err.value)
