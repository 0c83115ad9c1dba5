"""Atomic file writes, so a killed or parallel process leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` via a temporary file in the same folder and ``os.replace``.

    Missing parent folders are created. For writers that want a file object (``torch.save``,
    ``np.savez``), write to an ``io.BytesIO`` and pass its ``getvalue()``.

    Example:
        >>> write_atomic(Path("out/result.json"), json.dumps(result))  # doctest: +SKIP
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        try:
            tmp.write(data.encode() if isinstance(data, str) else data)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
