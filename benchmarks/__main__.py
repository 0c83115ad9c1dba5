"""Run every benchmark in its own interpreter: ``python -m benchmarks [PREFIX ...]``.

With prefixes, only the benchmarks whose module name starts with one of them run
(``python -m benchmarks gfn_``). Exits non-zero when any benchmark failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    prefixes = tuple(sys.argv[1:]) or ("",)
    names = sorted(path.stem for path in Path(__file__).resolve().parent.glob("*.py")
                   if not path.stem.startswith("_") and path.stem.startswith(prefixes))
    failed = []
    for name in names:
        print(f"== benchmarks.{name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode
        print(f"== benchmarks.{name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        sys.exit(f"failed benchmarks: {', '.join(failed)}")


if __name__ == "__main__":
    main()
