"""The round's training set: Materials Project data (mp-api cache, local folder) and every label of
the experiment database, converted into the crystal space.

Entries left out are counted by reason, Materials Project entries apart from the campaign's
own labels: a label without a crystal (a formula only, ``no_crystal``) or outside the space
(the first constraint it breaks, ``aloop.space.validity``) is stored but not trained on.

Example:
    >>> assembly = assemble_training_set(store, campaign_id, space=space, settings=cfg.data,
    ...                                  target="formation_energy_per_atom", seed=0)  # doctest: +SKIP
    >>> assembly.describe()  # doctest: +SKIP
    "45 entries ({'mp': 13, 'chgnet': 32}); dropped: Materials Project entries 12 (unknown_element 12),
    campaign labels 3 of 35 (no_crystal 2, too_many_atoms 1)"
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aloop.config import DataSettings
from aloop.data.convert import Entries, to_training_set
from aloop.data.local import read_local
from aloop.data.mp import MPQuery, load_cache
from aloop.data.training import TrainingSet
from aloop.space import Constraint, Crystal, CrystalBatch, CrystalSpace
from aloop.store import Campaign, Store, labelled_data

NO_CRYSTAL = "no_crystal"
"""Why a label without space group and lattice (an imported formula) is not trained on."""


@dataclass(frozen=True)
class Assembly:
    """The training set (``None`` when there is no data at all) and what was left out of it.

    Attributes:
        training: Materials Project entries and campaign labels inside the space.
        dropped: Materials Project entries (cache, local folder) left out, by reason.
        labels_read: the campaign's labels of the target property.
        labels_dropped: those left out, by reason (``no_crystal`` or the first constraint broken).
    """

    training: TrainingSet | None
    dropped: dict[str, int]
    labels_read: int
    labels_dropped: dict[str, int]

    def describe(self) -> str:
        """One line for the round's log, the campaign's own dropped labels told apart from Materials Project's."""
        kept = "no entries" if self.training is None else \
            f"{len(self.training)} entries ({dict(Counter(self.training.row_sources()))})"
        labels = self.labels_dropped
        return (f"{kept}; dropped: Materials Project entries {_counted(self.dropped)}, "
                f"campaign labels {sum(labels.values())} of {self.labels_read}"
                + (f" ({_reasons(labels)})" if labels else ""))


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))


def _counted(dropped: dict[str, int]) -> str:
    return f"{sum(dropped.values()):,} ({_reasons(dropped)})" if dropped else "none"


def assemble_training_set(store: Store, campaign_id: int, *, space: CrystalSpace, settings: DataSettings,
                          target: str, seed: int) -> Assembly:
    """Materials Project (cache, local folder) and the campaign's ``target`` labels, inside ``space``.

    Args:
        settings: where the data comes from and how much of it to keep (``max_entries``,
            a random subset drawn with ``seed``).
    """
    sources = [e for e in (load_cache(MPQuery.from_settings(space.settings, settings.mp),
                                      cache_dir=Path(settings.mp.cache_dir)),
                           read_local(Path(settings.local_path), source=settings.local_source)
                           if settings.local_path else None) if e is not None]
    labels = store_entries(store, campaign_id, target=target, space=space)
    known, dropped = _convert(sources, target=target, space=space)
    own, labels_dropped = _convert(labels, target=target, space=space)
    labels_read = sum(len(e) + sum(e.dropped.values()) for e in labels)
    if not known + own:
        return Assembly(None, dropped, labels_read, labels_dropped)
    data = TrainingSet.concat(known + own)
    if settings.max_entries and len(data) > settings.max_entries:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        data = data.subset(order[: settings.max_entries].sort().values)
    return Assembly(data, dropped, labels_read, labels_dropped)


def _convert(sources: Sequence[Entries], *, target: str, space: CrystalSpace) -> tuple[list[TrainingSet], dict[str, int]]:
    """The non-empty training sets of ``sources`` inside ``space`` and every entry left out, by reason."""
    kept: list[TrainingSet] = []
    dropped: Counter[str] = Counter()
    for entries in sources:
        if not len(entries):
            dropped.update(entries.dropped)
            continue
        conversion = to_training_set(entries, target=target, space=space)
        dropped.update(conversion.dropped)
        if len(conversion.training):
            kept.append(conversion.training)
    return kept, dict(dropped)


def store_entries(store: Store, campaign_id: int, *, target: str, space: CrystalSpace) -> list[Entries]:
    """The campaign's ``target`` labels, one ``Entries`` per oracle (its own fidelity), over the space's elements
    and any others the labels have (``to_training_set`` drops those as ``unknown_element``).

    Ordered by crystal, not by when the labels arrived: oracle jobs finishing in another
    order (several workers, a resumed round) give the same training set and the same round.
    Labels without a crystal are in ``Entries.dropped`` as ``no_crystal``; so are crystals of
    the space's elements with more atoms of one than ``space.max_atoms_per_element``, as
    ``too_many_atoms_of_element``, the constraint the checker would name first, without its
    Wyckoff test (which recurses too deep on hundreds of atoms).
    """
    with store.session() as session:
        points = labelled_data(session, session.get_one(Campaign, campaign_id), property=target)
    by_oracle: dict[str, list] = {}
    for point in points:
        by_oracle.setdefault(point.oracle, []).append(point)
    entries = []
    for oracle, rows in sorted(by_oracle.items()):
        dropped: Counter[str] = Counter()
        kept = []
        for point in rows:
            reason = NO_CRYSTAL if point.crystal is None else _beyond_space(point.crystal, space)
            if reason:
                dropped[reason] += 1
            else:
                kept.append(point)
        kept.sort(key=lambda p: (p.crystal.canonical_hash, p.value))
        elements = tuple(dict.fromkeys([*space.elements, *(el.symbol for p in kept for el in p.crystal.composition)]))
        entries.append(Entries(source=oracle, ids=tuple(f"{oracle}-{i}" for i in range(len(kept))),
                               crystals=CrystalBatch.from_crystals([p.crystal for p in kept], elements),
                               properties={target: np.array([p.value for p in kept], dtype=np.float64)},
                               dropped=dict(dropped)))
    return entries


def _beyond_space(crystal: Crystal, space: CrystalSpace) -> str:
    """``too_many_atoms_of_element`` for a crystal of the space's elements with more atoms of one than it holds."""
    within = all(el.symbol in space.elements for el in crystal.composition)
    most = max(crystal.composition.values(), default=0)
    return Constraint.TOO_MANY_ATOMS_OF_ELEMENT.value if within and most > space.settings.max_atoms_per_element else ""
