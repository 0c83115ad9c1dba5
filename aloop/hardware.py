"""Torch device and thread-count helpers, shared by the GFN, the proxy and sampling so all pick hardware alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name is used as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
