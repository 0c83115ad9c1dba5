"""Labels in and out of the experiment database: CSV or JSON lines in, CSV out.

A labels file has one label per row with these fields (CSV header or JSON keys):

==============================  =============================================================
``formula`` or ``cif``          the material: a formula, or a CIF (space group and lattice
                                are then read from the structure)
``space_group``, ``a`` ... ``gamma``  optional, together: international number 1-230,
                                lengths in Angstrom (0.5-1000), angles in degrees (0-180)
``wyckoff``                     optional, with a space group (or a CIF): the Wyckoff sites,
                                e.g. ``Na:4a Cl:4b`` (``aloop.space.wyckoff``); they must fit
                                the group and the cell's counts (and agree with the CIF's)
``property``, ``value``         e.g. ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV)
``uncertainty``                 optional, >= 0, same units as ``value``
``source``                      optional, stored as the label's oracle (default ``import``)
``fidelity``                    optional, trust in (0, 1] (default 1)
==============================  =============================================================

Every row is checked; valid rows are stored in one transaction and each rejected row is
reported as ``line N: reason`` (N as in an editor, the CSV header being line 1). A row's
crystal gets the checks of the crystal space that hold in every space (``aloop.space``):
a lattice that follows its group's lattice-system rule and makes a real cell, atom
counts that fit the group's Wyckoff positions. Numbers beyond ``LENGTH_RANGE`` and
``VALUE_BOUNDS``, and text longer than its database column, are rejected too, so the
rows a round would drop or the database would refuse never reach it.

Example:
    >>> report = import_labels(store, Path("labels.csv"), campaign="default")  # doctest: +SKIP
    >>> report.stored, [str(e) for e in report.rejected]  # doctest: +SKIP
    (41, ['line 7: value 'abc' is not a number'])
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from pymatgen.core import Composition, Element, Structure
from sqlalchemy import Column

from aloop.config import CRYSTAL_LATTICE_SYSTEMS
from aloop.space.composition import is_wyckoff_compatible
from aloop.space.crystal import LATTICE_KEYS, Crystal
from aloop.space.groups import space_group_table
from aloop.space.lattice import MIN_VOLUME, expand_lattice, follows_system, is_real_cell
from aloop.space.wyckoff import parse_sites, site_errors
from aloop.store import (
    REFERENCE_SOURCE,
    Label,
    Material,
    Store,
    find_campaign,
    get_or_create_campaign,
    get_or_create_material,
    label_rows,
    material_key,
    upsert_label,
)

FIELDS = ("formula", "cif", "space_group", *LATTICE_KEYS, "wyckoff", "property", "value", "uncertainty", "source",
          "fidelity")
DEFAULT_SOURCE = "import"
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
LATTICE_TOLERANCE = (0.01, 0.1)
"""How far (Angstrom, degrees) a row's lattice may differ from its CIF's."""
LENGTH_RANGE = (0.5, 1000.0)
"""Lattice lengths (Angstrom) of a conventional cell; outside, the number is a typo or in another unit."""
VALUE_BOUNDS = {"formation_energy_per_atom": 50.0, "e_above_hull": 50.0, "energy_per_atom": 1000.0, "band_gap": 100.0}
"""Largest |value| and uncertainty of the properties aloop uses (eV/atom; eV for ``band_gap``): tens of
times what any crystal has (MP formation energies lie within about -5 to 5 eV/atom), so only a typo, another
unit or a parsing error lands beyond them."""
OTHER_VALUE_BOUND = 1e12
"""Largest |value| and uncertainty of any other property, in its own unit."""


class LabelsFileError(ValueError):
    """The file cannot be read as labels at all; nothing is stored."""


@dataclass(frozen=True)
class LabelRow:
    """One valid row: the material (a crystal, or a composition only) and its label."""

    line: int
    composition: Composition
    crystal: Crystal | None
    cif: str | None
    property: str
    value: float
    uncertainty: float | None
    source: str
    fidelity: float


@dataclass(frozen=True)
class RowError:
    """A rejected row and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows stored and rows rejected (in file order)."""

    stored: int
    rejected: tuple[RowError, ...]

    @property
    def exit_code(self) -> int:
        """0 when every row was stored, 1 when some were rejected."""
        return 1 if self.rejected else 0


def read_labels(path: Path) -> tuple[list[LabelRow], list[RowError]]:
    """Parse and check every row of a CSV or JSON-lines labels file (nothing is stored).

    The format is chosen by suffix (``.csv``; ``.jsonl``/``.ndjson``/``.json``), else by
    whether the first non-empty line is a JSON object. A UTF-8 BOM is accepted and empty
    lines are skipped.

    Raises:
        LabelsFileError: unreadable, not UTF-8 text, or not CSV/JSON lines with the fields above.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise LabelsFileError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise LabelsFileError(f"{path}: not a text file (byte {err.start} is not UTF-8); "
                              "expected CSV or JSON lines") from None
    if "\x00" in text:
        raise LabelsFileError(f"{path}: not a text file (it contains NUL bytes); expected CSV or JSON lines")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        raise LabelsFileError(f"{path}: the file is empty; expected a CSV header or JSON lines")
    as_jsonl = path.suffix.lower() in JSONL_SUFFIXES or (path.suffix.lower() != ".csv" and first.startswith("{"))
    records = _jsonl_records(path, text) if as_jsonl else _csv_records(path, text)
    rows: list[LabelRow] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, str, str], int] = {}
    for line, record in records:
        try:
            if isinstance(record, str):
                raise ValueError(record)
            row = parse_row(record, line=line)
            key = (material_key(row.composition, row.crystal), row.source, row.property)
            if key in seen:
                raise ValueError(f"duplicate of line {seen[key]} (same material, source {row.source!r} "
                                 f"and property {row.property!r})")
        except ValueError as err:
            errors.append(RowError(line, str(err)))
            continue
        seen[key] = line
        rows.append(row)
    return rows, errors


def import_labels(store: Store, path: Path, *, campaign: str) -> ImportReport:
    """Read ``path`` and store all its valid rows as material labels in one transaction.

    Each row becomes a ``Material`` of the campaign (found again by crystal hash or
    composition) with one ``Label`` whose oracle is the row's ``source``; importing the
    same file twice stores nothing new.

    Raises:
        LabelsFileError: the file cannot be read at all (nothing stored).
    """
    rows, errors = read_labels(path)
    with store.session() as session:
        owner = get_or_create_campaign(session, campaign)
        for row in rows:
            material = get_or_create_material(session, owner, composition=row.composition, crystal=row.crystal,
                                              cif=row.cif, source=row.source)
            upsert_label(session, material_id=material.id, oracle=row.source, fidelity=row.fidelity,
                         property=row.property, value=row.value, uncertainty=row.uncertainty,
                         metadata={"file": path.name, "line": row.line})
    return ImportReport(stored=len(rows), rejected=tuple(errors))


def export_labels(store: Store, out: TextIO, *, campaign: str) -> int:
    """Write the campaign's ``ok`` labels as CSV (the import format); returns the row count.

    Candidates are written by their parameters and Wyckoff sites, materials with their sites and
    CIF when they have them; ``source`` is the label's oracle. The hull's reference labels
    (elemental references, known phases) are the oracle's internals and stay out.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("formula", "space_group", *LATTICE_KEYS, "wyckoff", "cif", "property", "value", "uncertainty",
                     "source", "fidelity"))
    with store.session() as session:
        owner = find_campaign(session, campaign)
        rows = [(label, candidate, material) for label, candidate, material in
                (label_rows(session, owner) if owner is not None else [])
                if material is None or material.source != REFERENCE_SOURCE]
        for label, candidate, material in rows:
            subject: Any = candidate if candidate is not None else material
            lattice = [subject.a, subject.b, subject.c, subject.alpha, subject.beta, subject.gamma]
            cif = material.cif if material is not None else None
            writer.writerow((subject.formula, _cell(subject.space_group), *map(_cell, lattice), subject.wyckoff or "",
                             cif or "", label.property, _cell(label.value), _cell(label.uncertainty), label.oracle,
                             _cell(label.fidelity)))
    return len(rows)


def parse_row(record: Mapping[str, Any], *, line: int) -> LabelRow:
    """Check one row (field -> text or number; empty means absent) and build its ``LabelRow``.

    Raises:
        ValueError: the first problem found, e.g. ``unknown element 'Xx' in formula 'Xx2O'``.
    """
    fields = {k: v for k, v in record.items() if v is not None and str(v).strip() != ""}
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown fields {unknown}; fields: {list(FIELDS)}")
    missing = [k for k in ("property", "value") if k not in fields]
    if "formula" not in fields and "cif" not in fields:
        missing.insert(0, "formula or cif")
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    value = _number(fields, "value")
    uncertainty = _number(fields, "uncertainty") if "uncertainty" in fields else None
    if uncertainty is not None and uncertainty < 0:
        raise ValueError(f"uncertainty {uncertainty} is negative")
    fidelity = _number(fields, "fidelity") if "fidelity" in fields else 1.0
    if not 0 < fidelity <= 1:
        raise ValueError(f"fidelity {fidelity} is outside (0, 1]")
    prop = str(fields["property"]).strip()
    _check_magnitude(prop, value=value, uncertainty=uncertainty)
    given = _given_crystal(fields)
    composition = _composition(str(fields["formula"])) if "formula" in fields else None
    cif = str(fields["cif"]) if "cif" in fields else None
    if cif is not None:
        crystal: Crystal | None = _crystal_from_cif(cif, composition, given)
        composition = crystal.composition  # type: ignore[union-attr]
    elif given is not None:
        space_group, lattice = given
        if any(n != int(n) for n in composition.values()):  # type: ignore[union-attr]
            raise ValueError(f"formula {fields['formula']!r} has fractional counts; with space_group and lattice "
                             "give the atoms of the conventional cell")
        crystal = Crystal(space_group, composition, lattice)  # type: ignore[arg-type]
    else:
        crystal = None
    if "wyckoff" in fields:
        crystal = _with_sites(crystal, str(fields["wyckoff"]), from_cif=cif is not None)
    if crystal is not None:
        _check_crystal(crystal)
    row = LabelRow(line=line, composition=composition, crystal=crystal, cif=cif,  # type: ignore[arg-type]
                   property=prop, value=value, uncertainty=uncertainty,
                   source=str(fields.get("source", DEFAULT_SOURCE)).strip(), fidelity=fidelity)
    _check_storable(row)
    return row


def _check_crystal(crystal: Crystal) -> None:
    """Check what every crystal space checks, whatever its elements and limits (``aloop.space``).

    Raises:
        ValueError: a lattice length outside ``LENGTH_RANGE``, a lattice that breaks its
            group's lattice-system rule or makes no cell, or counts that do not fit the
            group's Wyckoff positions.
    """
    shown = ", ".join(f"{x:g}" for x in crystal.lattice)
    for key, length in zip(LATTICE_KEYS[:3], crystal.lattice[:3], strict=True):
        if not LENGTH_RANGE[0] <= length <= LENGTH_RANGE[1]:
            raise ValueError(f"lattice length {key}={length:g} is outside {LENGTH_RANGE[0]:g}-{LENGTH_RANGE[1]:g} "
                             "Angstrom")
    lattice = torch.tensor([crystal.lattice], dtype=torch.float64)  # (1, 6)
    system = space_group_table().lattice_system[[crystal.space_group]]  # (1,)
    if not bool(follows_system(system, lattice)[0]):
        ruled = ", ".join(f"{x:g}" for x in expand_lattice(system, lattice)[0].tolist())
        raise ValueError(f"lattice ({shown}) breaks the {CRYSTAL_LATTICE_SYSTEMS[int(system[0])]} rule of space group "
                         f"{crystal.space_group}, which would make it ({ruled})")
    if not bool(is_real_cell(lattice)[0]):
        raise ValueError(f"lattice ({shown}) makes no cell of volume above {MIN_VOLUME} A^3")
    counts = [int(n) for n in crystal.composition.values()]
    if not is_wyckoff_compatible(crystal.space_group, counts):
        raise ValueError(f"counts {sorted(counts, reverse=True)} of {crystal.formula} do not fit the Wyckoff "
                         f"positions of space group {crystal.space_group}")


def _with_sites(crystal: Crystal | None, text: str, *, from_cif: bool) -> Crystal:
    """``crystal`` with the row's Wyckoff sites ``text``, checked against its group and counts (and its CIF's sites).

    Raises:
        ValueError: no crystal to put them on, a malformed token (named), sites that do not fit,
            or sites that disagree with those the CIF gives.
    """
    if crystal is None:
        raise ValueError(f"wyckoff {text!r} needs space_group and {', '.join(LATTICE_KEYS)} (or a cif)")
    sites = parse_sites(text, crystal.space_group)  # SitesError (a ValueError) names the token
    problems = site_errors(sites, crystal.space_group, {el.symbol: int(n) for el, n in crystal.composition.items()})
    if problems:
        raise ValueError(f"wyckoff {text!r} does not fit {crystal.formula} in space group {crystal.space_group}: "
                         f"{'; '.join(problems)}")
    if from_cif and crystal.sites and crystal.sites != sites:
        raise ValueError(f"wyckoff {text!r} disagrees with the CIF's {crystal.wyckoff!r}")
    return dataclasses.replace(crystal, sites=sites)


def _check_magnitude(prop: str, *, value: float, uncertainty: float | None) -> None:
    bound = VALUE_BOUNDS.get(prop, OTHER_VALUE_BOUND)
    for key, number in (("value", value), ("uncertainty", uncertainty)):
        if number is not None and abs(number) > bound:
            raise ValueError(f"{key} {number:g} is absurd for {prop}: |{key}| above {bound:g} (a typo, another unit?)")


def _check_storable(row: LabelRow) -> None:
    """Every text of the row fits its database column (its length from ``aloop.store.models``, no NUL byte)."""
    stored: list[tuple[str, str, Column]] = [
        ("property", row.property, Label.__table__.c.property),
        ("source", row.source, Label.__table__.c.oracle),
        ("source", row.source, Material.__table__.c.source),
        ("cell formula", row.composition.formula, Material.__table__.c.formula),
        ("material key", material_key(row.composition, row.crystal), Material.__table__.c.key),
        ("cif", row.cif or "", Material.__table__.c.cif),
    ]
    for name, text, column in stored:
        if "\x00" in text:
            raise ValueError(f"{name} contains a NUL character, which the database cannot store")
        limit = column.type.length
        if limit is not None and len(text) > limit:
            raise ValueError(f"{name} is {len(text)} characters long; the database keeps at most {limit} "
                             f"({column.table.name}.{column.name})")


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, field -> text) per non-empty CSV record, or (line, reason) for a malformed one."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start = 1
    for record in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip() for cell in record]
            _check_header(path, line, header)
            continue
        if len(record) != len(header):
            yield line, f"expected {len(header)} fields as in the header, got {len(record)}"
            continue
        yield line, dict(zip(header, record, strict=True))


def _check_header(path: Path, line: int, header: list[str]) -> None:
    unknown = [name for name in header if name not in FIELDS]
    repeated = sorted({name for name in header if header.count(name) > 1})
    lacking = [k for k in ("property", "value") if k not in header]
    if not {"formula", "cif"} & set(header):
        lacking.insert(0, "formula or cif")
    if unknown or repeated or lacking:
        problems = [f"unknown columns {unknown}" if unknown else "", f"repeated columns {repeated}" if repeated else "",
                    f"missing {', '.join(lacking)}" if lacking else ""]
        raise LabelsFileError(f"{path}: line {line}: not a labels CSV header ({'; '.join(p for p in problems if p)}); "
                              "expected columns formula or cif, property, value, optionally space_group, "
                              f"{', '.join(LATTICE_KEYS)}, wyckoff, uncertainty, source, fidelity")


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, object) per non-empty line, or (line, reason) for a line that is not a JSON object."""
    parsed_any = False
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            if not parsed_any:
                raise LabelsFileError(f"{path}: line {line}: not JSON ({err.msg}); expected one JSON object "
                                      "per line") from None
            yield line, f"not valid JSON ({err.msg} at column {err.colno})"
            continue
        parsed_any = True
        yield line, record if isinstance(record, dict) else f"expected a JSON object, got {type(record).__name__}"


def _number(fields: Mapping[str, Any], key: str) -> float:
    raw = fields[key]
    if isinstance(raw, bool):
        raise ValueError(f"{key} {raw!r} is not a number")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} {raw!r} is not finite")
    return number


def _composition(formula: str) -> Composition:
    try:
        composition = Composition(formula)
    except (ValueError, KeyError) as err:
        raise ValueError(f"formula {formula!r} is not a chemical formula ({err})") from None
    for species in composition:
        if not Element.is_valid_symbol(str(species.symbol)):
            raise ValueError(f"unknown element {species.symbol!r} in formula {formula!r}")
    if not composition.num_atoms > 0:
        raise ValueError(f"formula {formula!r} has no atoms")
    return composition


def _given_crystal(fields: Mapping[str, Any]) -> tuple[int, tuple[float, ...]] | None:
    """The row's space group and lattice, checked, or ``None`` when it gives neither."""
    present = [k for k in ("space_group", *LATTICE_KEYS) if k in fields]
    if not present:
        return None
    if len(present) < 7:
        absent = [k for k in ("space_group", *LATTICE_KEYS) if k not in fields]
        raise ValueError(f"space_group and {', '.join(LATTICE_KEYS)} go together; missing {', '.join(absent)}")
    space_group = _number(fields, "space_group")
    if space_group != int(space_group) or not 1 <= space_group <= 230:
        raise ValueError(f"space_group {fields['space_group']!r} is not an integer in 1-230")
    lattice = tuple(_number(fields, k) for k in LATTICE_KEYS)
    for key, angle in zip(LATTICE_KEYS[3:], lattice[3:], strict=True):
        if not 0 < angle < 180:
            raise ValueError(f"lattice angle {key}={angle} is outside (0, 180) degrees")
    return int(space_group), lattice


def _crystal_from_cif(cif: str, composition: Composition | None,
                      given: tuple[int, tuple[float, ...]] | None) -> Crystal:
    """The crystal of a CIF, checked against the row's formula, space group and lattice if given."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(cif, fmt="cif")
        crystal = Crystal.from_structure(structure)
    except Exception as err:  # pymatgen raises many types for a broken CIF
        raise ValueError(f"broken CIF ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    reduced = crystal.composition.reduced_composition
    if composition is not None and not composition.reduced_composition.almost_equals(reduced):
        raise ValueError(f"formula {composition.reduced_formula!r} disagrees with the CIF's "
                         f"{crystal.composition.reduced_formula!r}")
    if given is not None:
        space_group, lattice = given
        if space_group != crystal.space_group:
            raise ValueError(f"space_group {space_group} disagrees with the CIF's {crystal.space_group}")
        tolerance = [LATTICE_TOLERANCE[0]] * 3 + [LATTICE_TOLERANCE[1]] * 3
        if any(abs(x - y) > t for x, y, t in zip(lattice, crystal.lattice, tolerance, strict=True)):
            raise ValueError(f"lattice {lattice} disagrees with the CIF's conventional cell "
                             f"{tuple(round(x, 4) for x in crystal.lattice)}")
    return crystal


def _cell(value: float | int | None) -> str:
    """A CSV cell: empty for ``None``, the shortest exact text for a number."""
    return "" if value is None else repr(value)
