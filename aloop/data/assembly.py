"""The round's training set: Materials Project data (mp-api cache, local folder) and every label of
the experiment database, converted into the crystal space.

Example:
    >>> assembly = assemble_training_set(store, campaign_id, space=space, settings=cfg.data,
    ...                                  target="formation_energy_per_atom", seed=0)  # doctest: +SKIP
    >>> assembly.describe()  # doctest: +SKIP
    "45 entries ({'mp': 13, 'chgnet': 32}); dropped: {'outside the space': 12}"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aloop.config import DataSettings
from aloop.data.convert import Entries, to_training_set
from aloop.data.local import read_local
from aloop.data.mp import MPQuery, load_cache
from aloop.data.training import TrainingSet
from aloop.space import CrystalBatch, CrystalSpace
from aloop.store import Campaign, Store, labelled_data


@dataclass(frozen=True)
class Assembly:
    """The training set (``None`` when there is no data at all) and the entries dropped, by reason."""

    training: TrainingSet | None
    dropped: dict[str, int]

    def describe(self) -> str:
        kept = "no entries" if self.training is None else \
            f"{len(self.training)} entries ({dict(Counter(self.training.row_sources()))})"
        return f"{kept}; dropped: {self.dropped or 'none'}"


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
    sources += store_entries(store, campaign_id, target=target, elements=space.elements)
    conversions = [to_training_set(entries, target=target, space=space) for entries in sources if len(entries)]
    dropped: Counter = Counter()
    for conversion in conversions:
        dropped.update(conversion.dropped)
    kept = [c.training for c in conversions if len(c.training)]
    if not kept:
        return Assembly(None, dict(dropped))
    data = TrainingSet.concat(kept)
    if settings.max_entries and len(data) > settings.max_entries:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        data = data.subset(order[: settings.max_entries].sort().values)
    return Assembly(data, dict(dropped))


def store_entries(store: Store, campaign_id: int, *, target: str, elements: tuple[str, ...]) -> list[Entries]:
    """The campaign's ``target`` labels with a crystal, one ``Entries`` per oracle (its own fidelity).

    Ordered by crystal, not by when the labels arrived: oracle jobs finishing in another
    order (several workers, a resumed round) give the same training set and the same round.
    """
    with store.session() as session:
        points = sorted((p for p in labelled_data(session, session.get_one(Campaign, campaign_id), property=target)
                         if p.crystal is not None), key=lambda p: (p.crystal.canonical_hash, p.value))
    by_oracle: dict[str, list] = {}
    for point in points:
        by_oracle.setdefault(point.oracle, []).append(point)
    return [Entries(source=oracle, ids=tuple(f"{oracle}-{i}" for i in range(len(rows))),
                    crystals=CrystalBatch.from_crystals([p.crystal for p in rows], list(elements)),
                    properties={target: np.array([p.value for p in rows], dtype=np.float64)})
            for oracle, rows in sorted(by_oracle.items())]
