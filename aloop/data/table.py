"""A CSV of labelled crystals, the input of ``aloop proxy fit`` and ``aloop proxy eval``, and its crystal columns.

Columns: ``material_id``; the crystal as ``cif`` or as ``formula`` (atoms of the
conventional cell, e.g. ``Na4Cl4``), ``space_group`` and ``a, b, c, alpha, beta, gamma``
(Angstrom, degrees), optionally ``wyckoff`` (the sites, e.g. ``Na:4a Cl:4b``); the target column (``formation_energy_per_atom`` in eV/atom or
``band_gap`` in eV); optionally ``source`` (the label's source, default ``csv``). Each row
is checked as a labels row (``aloop.label_files.parse_row``: same messages, same CIF checks).

``crystal_table`` writes crystals in the same columns (``aloop sample``'s CSV, the MLflow
proxy model's input).

Example:
    >>> train = read_table(Path("train.csv"), target="formation_energy_per_atom")  # doctest: +SKIP
    >>> list(crystal_table(train.crystals.to_crystals()).columns)  # doctest: +SKIP
    ['formula', 'space_group', 'a', 'b', 'c', 'alpha', 'beta', 'gamma', 'wyckoff']
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from aloop.data.training import TARGETS, TrainingSet
from aloop.label_files import parse_row
from aloop.space.crystal import LATTICE_KEYS, Crystal

DEFAULT_SOURCE = "csv"
CRYSTAL_TABLE_COLUMNS = ("formula", "space_group", *LATTICE_KEYS, "wyckoff")
"""A crystal as a table row: full cell formula, space group, lattice (Angstrom, degrees), Wyckoff sites
(``Crystal.wyckoff``; empty without)."""
CRYSTAL_COLUMNS = ("cif", *CRYSTAL_TABLE_COLUMNS)
MAX_REPORTED = 5


class TableError(ValueError):
    """The CSV cannot be used; the message names the file, the line and the problem."""


def crystal_table(crystals: Sequence[Crystal]) -> pd.DataFrame:
    """One row per crystal in ``CRYSTAL_TABLE_COLUMNS``, e.g. formula ``Fe4 O6``, space group 167, a ... gamma."""
    return pd.DataFrame([{"formula": c.formula, "space_group": c.space_group,
                          **dict(zip(LATTICE_KEYS, c.lattice, strict=True)), "wyckoff": c.wyckoff} for c in crystals],
                        columns=list(CRYSTAL_TABLE_COLUMNS))


def read_table(path: Path, *, target: str | None = None) -> TrainingSet:
    """All rows of the CSV at ``path`` as a training set of ``target``.

    Args:
        target: the label column; ``None`` picks the one of ``TARGETS`` the file has.

    Raises:
        TableError: unreadable file, missing columns, or rows that are not valid crystals
            with a numeric label (the first few are listed as ``line N: reason``).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [{str(k).strip(): v for k, v in row.items() if k is not None} for row in csv.DictReader(handle)]
            header = list(rows[0]) if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TableError(f"{path}: cannot read as CSV ({err})") from None
    if not rows:
        raise TableError(f"{path}: no rows; expected a header and one row per crystal")
    target = target or next((t for t in TARGETS if t in header), None)
    missing = [c for c in ("material_id", target) if c is None or c not in header]
    if missing or not {"cif", "formula"} & set(header):
        raise TableError(f"{path}: columns {header} lack {missing or ['cif or formula']}; expected material_id, "
                         f"cif or (formula, space_group, {', '.join(LATTICE_KEYS)}), and one of {list(TARGETS)}")
    crystals, values, sources, ids, errors = [], [], [], [], []
    for line, row in enumerate(rows, start=2):
        record = {k: row.get(k) for k in CRYSTAL_COLUMNS if row.get(k) not in (None, "")}
        try:
            parsed = parse_row({**record, "property": target, "value": row.get(target), "source": row.get("source")},
                               line=line)
            if parsed.crystal is None:
                raise ValueError("formula needs space_group and a, b, c, alpha, beta, gamma (or give a cif)")
        except ValueError as err:
            errors.append(f"line {line}: {err}")
            continue
        crystals.append(parsed.crystal)
        values.append(parsed.value)
        sources.append(parsed.source if row.get("source") else DEFAULT_SOURCE)
        ids.append(str(row.get("material_id") or f"line-{line}"))
    if errors:
        more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
        raise TableError(f"{path}: {len(errors)} bad rows{more}:\n" + "\n".join(errors[:MAX_REPORTED]))
    return TrainingSet.from_crystals(crystals, values, sources=sources, ids=ids, target=target)
