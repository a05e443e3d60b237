"""torch's intra-op thread count, set in one place.

On a two-core machine one thread is usually fastest for small molecules, and which count wins depends on
the load, so every command takes ``--threads`` and benchmarks measure 1 and 2 side by side (README).
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import torch

from .validation import count


def check_threads(threads, argument: str = "threads") -> int:
    """``threads`` if it is a positive integer (a thread count; the ``check`` of every ``--threads``)."""
    return count(threads, argument, "a positive number of torch threads")


def use_torch_threads(threads, argument: str = "threads") -> int:
    """Check ``threads`` (a positive integer) and make torch use that many intra-op threads."""
    threads = check_threads(threads, argument)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and threads > cores:
        warnings.warn(f"{argument}: {threads} torch threads on {cores} cores: they will take turns, which is "
                      f"slower than {cores}", stacklevel=2)
    torch.set_num_threads(threads)
    return threads


@contextmanager
def torch_threads(threads, argument: str = "threads"):
    """:func:`use_torch_threads` for the ``with`` block; the previous count is restored after it."""
    previous = torch.get_num_threads()
    try:
        yield use_torch_threads(threads, argument)
    finally:
        torch.set_num_threads(previous)
