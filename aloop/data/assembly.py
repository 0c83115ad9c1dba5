"""The round's training set: Materials Project data (mp-api cache, local folder), every label of
the experiment database and, for formation energy, the hull's known phases as the campaign's
oracle relaxed them (``aloop.hull.known_phase_entries``), converted into the crystal space.

``data.scope`` decides which entries train the proxy (``aloop.data.convert.SCOPES``): those
inside the space, those sharing an element with it, or all. Entries left out are counted
by reason, Materials Project entries apart from the campaign's own labels: a label without
a crystal (a formula only, ``no_crystal``) is stored but never trained on; one outside the
space is left out like a Materials Project entry would be. In the wide scopes, rows kept
from outside the space are counted by the first constraint they break.

Example:
    >>> assembly = assemble_training_set(store, campaign_id, space=space, settings=cfg.data,
    ...                                  target="formation_energy_per_atom", seed=0)  # doctest: +SKIP
    >>> assembly.describe()  # doctest: +SKIP
    "45 entries ({'mp': 13, 'chgnet': 32}); dropped: Materials Project entries 12 (unknown_element 12),
    campaign labels 3 of 35 (no_crystal 2, too_many_atoms 1)"
    >>> wide.describe()  # settings.scope == "all"  # doctest: +SKIP
    "33,091 entries ({'mp_legacy': 33059, 'chgnet': 32}): 37 inside the space, 33,054 outside (unknown_element
    33,004, ...); dropped: Materials Project entries 4 (ef_outlier 4), campaign labels 0 of 32"
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aloop.config import DataSettings
from aloop.data.convert import Entries, by_reason, to_training_set
from aloop.data.local import read_local
from aloop.data.mp import MPQuery, load_cache
from aloop.data.training import TrainingSet
from aloop.hull import known_phase_entries
from aloop.space import CrystalBatch, CrystalSpace
from aloop.store import Campaign, Store, labelled_data

NO_CRYSTAL = "no_crystal"
"""Why a label without space group and lattice (an imported formula) is not trained on."""


@dataclass(frozen=True)
class Assembly:
    """The training set (``None`` when there is no data at all) and what was left out of it.

    Attributes:
        training: Materials Project entries and campaign labels within the scope.
        dropped: Materials Project entries (cache, local folder) left out, by reason.
        labels_read: the campaign's labels of the target property.
        labels_dropped: those left out, by reason (``no_crystal`` or why it is beyond the scope).
        outside: rows of ``training`` from outside the space (wide scopes), by the first constraint they break.
        known_phases: rows of ``training`` that are the hull's known phases as the campaign's oracle relaxed them.
    """

    training: TrainingSet | None
    dropped: dict[str, int]
    labels_read: int
    labels_dropped: dict[str, int]
    outside: dict[str, int] = field(default_factory=dict)
    known_phases: int = 0

    def describe(self) -> str:
        """One line for the round's log: rows inside and outside the space (when some are outside), and the
        campaign's own dropped labels told apart from Materials Project's."""
        kept = "no entries" if self.training is None else \
            f"{len(self.training):,} entries ({dict(Counter(self.training.row_sources()))})"
        if self.training is not None and self.outside:
            outside = sum(self.outside.values())
            kept += (f": {len(self.training) - outside:,} inside the space, {outside:,} outside "
                     f"({by_reason(self.outside)})")
        if self.known_phases:
            kept += f", {self.known_phases} of them known phases relaxed by the oracle"
        labels = self.labels_dropped
        return (f"{kept}; dropped: Materials Project entries {_counted(self.dropped)}, "
                f"campaign labels {sum(labels.values())} of {self.labels_read}"
                + (f" ({by_reason(labels)})" if labels else ""))


def _counted(dropped: dict[str, int]) -> str:
    return f"{sum(dropped.values()):,} ({by_reason(dropped)})" if dropped else "none"


def assemble_training_set(store: Store, campaign_id: int, *, space: CrystalSpace, settings: DataSettings,
                          target: str, seed: int) -> Assembly:
    """Materials Project (cache, local folder) and the campaign's ``target`` labels within ``settings.scope``.

    Args:
        settings: where the data comes from, its scope and how much of it to keep: at most
            ``max_entries`` Materials Project rows, those inside the space first, then a random
            subset of the others drawn with ``seed``; the campaign's labels are all kept.
    """
    query = MPQuery.from_settings(space.settings, settings.mp, scope=settings.scope)
    sources = [e for e in (load_cache(query, cache_dir=Path(settings.mp.cache_dir)),
                           read_local(Path(settings.local_path), source=settings.local_source)
                           if settings.local_path else None) if e is not None]
    labels = store_entries(store, campaign_id, target=target, space=space)
    known, dropped, outside = _convert(sources, target=target, space=space, scope=settings.scope,
                                       max_entries=settings.max_entries, seed=seed)
    own, labels_dropped, own_outside = _convert(labels, target=target, space=space, scope=settings.scope)
    own = [rows.as_campaign_labels() for rows in own]
    phases, _, phases_outside = _convert(
        known_phase_entries(store, campaign_id, space.elements) if target == "formation_energy_per_atom" else [],
        target=target, space=space, scope=settings.scope)
    labels_read = sum(len(e) + sum(e.dropped.values()) for e in labels)
    outside = dict(Counter(outside) + Counter(own_outside) + Counter(phases_outside))
    if not known + own + phases:
        return Assembly(None, dropped, labels_read, labels_dropped)
    return Assembly(TrainingSet.concat(known + own + phases), dropped, labels_read, labels_dropped, outside,
                    known_phases=sum(len(p) for p in phases))


def _convert(sources: Sequence[Entries], *, target: str, space: CrystalSpace, scope: str,
             max_entries: int | None = None, seed: int = 0
             ) -> tuple[list[TrainingSet], dict[str, int], dict[str, int]]:
    """The rows of ``sources`` within ``scope`` (one training set, none when empty), every entry left out by
    reason, and the kept rows outside the space by the first constraint they break.

    Beyond ``max_entries`` rows, those inside the space are kept first and the rest drawn at random.
    """
    kept: list[TrainingSet] = []
    broken: list[np.ndarray] = []
    dropped: Counter[str] = Counter()
    for entries in sources:
        if not len(entries):
            dropped.update(entries.dropped)
            continue
        conversion = to_training_set(entries, target=target, space=space, scope=scope)
        dropped.update(conversion.dropped)
        if len(conversion.training):
            kept.append(conversion.training)
            broken.append(conversion.broken)
    if not kept:
        return [], dict(dropped), {}
    data, reasons = TrainingSet.concat(kept), np.concatenate(broken)
    if max_entries and len(data) > max_entries:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        order = order[torch.argsort(torch.as_tensor(reasons[order.numpy()] != ""), stable=True)]  # inside first
        rows = order[:max_entries].sort().values
        data, reasons = data.subset(rows), reasons[rows.numpy()]
    return [data], dict(dropped), dict(Counter(reasons[reasons != ""].tolist()))


def store_entries(store: Store, campaign_id: int, *, target: str, space: CrystalSpace) -> list[Entries]:
    """The campaign's ``target`` labels, one ``Entries`` per oracle (its own fidelity), over the space's elements
    and any others the labels have (``to_training_set`` decides which are within the scope).

    Ordered by crystal, not by when the labels arrived: oracle jobs finishing in another
    order (several workers, a resumed round) give the same training set and the same round.
    Labels without a crystal are in ``Entries.dropped`` as ``no_crystal``.
    """
    with store.session() as session:
        points = labelled_data(session, session.get_one(Campaign, campaign_id), property=target)
    by_oracle: dict[str, list] = {}
    for point in points:
        by_oracle.setdefault(point.oracle, []).append(point)
    entries = []
    for oracle, rows in sorted(by_oracle.items()):
        kept = sorted((p for p in rows if p.crystal is not None), key=lambda p: (p.crystal.canonical_hash, p.value))
        missing = len(rows) - len(kept)
        elements = tuple(dict.fromkeys([*space.elements, *(el.symbol for p in kept for el in p.crystal.composition)]))
        entries.append(Entries(source=oracle, ids=tuple(f"{oracle}-{i}" for i in range(len(kept))),
                               crystals=CrystalBatch.from_crystals([p.crystal for p in kept], elements),
                               properties={target: np.array([p.value for p in kept], dtype=np.float64)},
                               dropped={NO_CRYSTAL: missing} if missing else {}))
    return entries
