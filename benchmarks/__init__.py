"""Benchmarks: plain scripts, one per measured figure, run as ``python -m benchmarks.<name>``.

Each prints a table and writes its results under ``benchmarks/results/``.
``python -m benchmarks`` (``make bench``) runs them all; modules whose name starts
with ``_`` are helpers, not benchmarks.
"""
