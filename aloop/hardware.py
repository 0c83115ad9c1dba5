"""Torch device and thread-count helpers, shared by the GFN, the proxy and sampling so all pick hardware alike."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")
"""The device names aloop accepts (``gfn.device``): ``auto`` is CUDA when present, else CPU."""


def resolve_device(name: str) -> torch.device:
    """The torch device of a name in ``DEVICE_NAMES``.

    ``"auto"`` -> ``cuda`` when CUDA is available, else ``cpu``; ``"cpu"``; ``"cuda"`` or
    ``"cuda:N"`` only when this machine has that GPU.

    Raises:
        ValueError: an unknown name, or a CUDA device this machine does not have (the
            message says which and what to use instead).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise ValueError(f"device {name!r} is not one of {list(DEVICE_NAMES)}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine "
                         "(torch.cuda.is_available() is False); use 'auto' (CUDA when present, else CPU) or 'cpu'")
    count = torch.cuda.device_count()
    if int(match[1] or 0) >= count:
        raise ValueError(f"device {name!r} asked for, but this machine has {count} CUDA device(s): "
                         f"{[f'cuda:{i}' for i in range(count)]}")
    return torch.device(name)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None`` or 0: leave torch's setting), then restore.

    The GFN's matrices are small; on the shared 2-core machine one thread trained 8-10x and
    sampled 3-10x faster than two, which contend with other processes.
    """
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS reports one (Linux), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers_for(threads_per_worker: int | None, cores: int | None = None) -> int:
    """How many evaluations of ``threads_per_worker`` threads each fit the cores (``available_cores()`` by
    default), at least one, so that workers x threads <= cores; ``None`` threads (a library's default,
    every core) leaves room for one.

    Example:
        >>> workers_for(1, cores=2), workers_for(2, cores=2), workers_for(None, cores=8)
        (2, 1, 1)
    """
    if threads_per_worker is None:
        return 1
    return max(1, (cores or available_cores()) // threads_per_worker)
