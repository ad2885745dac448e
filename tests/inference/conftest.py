"""Shared set-up of the inference tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Train on one core: the small test models run several times faster than with
    torch's threads competing on the two-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_threads():
    """Call functions at the same moment, each in a thread of its own; their results, in order."""

    def run(*functions):
        barrier = threading.Barrier(len(functions))

        def call(function):
            barrier.wait()
            return function()

        with ThreadPoolExecutor(len(functions)) as pool:
            futures = [pool.submit(call, f) for f in functions]
            return [f.result() for f in futures]

    return run
