"""``TrainingSet``: crystals with one measured property and the source of every label.

Labels of different oracles are different measurements (Materials Project's legacy DFT,
fresh mp-api data, the CHGNet oracle, ...): every row keeps its ``source``, and the
proxy tells them apart. Every row also says whether it lies inside the crystal space
(``inside``): the proxy can give those rows, and the campaign's labels among them, a fixed
share of its fit when the rest comes from beyond the space (``data.scope``). The campaign's
own labels are marked (``campaign_label``): the proxy learns from them how far the crystals
the loop proposes sit from what the rest of the data predicts (``aloop.proxy.correction``).

Example:
    >>> nacl = Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3)
    >>> train = TrainingSet.from_crystals([nacl], [-2.1], sources=["mp_legacy"], ids=["mp-22862"],
    ...                                   target="formation_energy_per_atom")
    >>> len(train), train.source_names
    (1, ('mp_legacy',))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from pymatgen.core import Element

from aloop.space.crystal import Crystal, CrystalBatch

TARGETS = ("formation_energy_per_atom", "band_gap")
"""Properties a proxy can be trained on (eV/atom, eV)."""


@dataclass(frozen=True)
class TrainingSet:
    """N labelled crystals.

    Attributes:
        target: the property, one of ``TARGETS``.
        crystals: the N crystals (conventional standard cells).
        values: ``(N,)`` float64 labels (eV/atom for formation energy, eV for band gap).
        source: ``(N,)`` long, index into ``sources``.
        sources: names of the label sources, e.g. ``("mp_legacy", "chgnet")``.
        ids: ``N`` identifiers (material id, label id).
        inside: ``(N,)`` bool, whether each row lies inside the crystal space; ``None`` (no space
            known, e.g. a CSV file) marks every row inside.
        campaign_label: ``(N,)`` bool, whether each row is one of the campaign's own labels (an oracle's
            value of a crystal the loop proposed), not Materials Project's or a known phase's; ``None``: none is.
    """

    target: str
    crystals: CrystalBatch
    values: torch.Tensor
    source: torch.Tensor
    sources: tuple[str, ...]
    ids: tuple[str, ...]
    inside: torch.Tensor | None = None
    campaign_label: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.crystals)
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r} is not one of {list(TARGETS)}")
        if self.inside is None:
            object.__setattr__(self, "inside", torch.ones(n, dtype=torch.bool))
        if self.campaign_label is None:
            object.__setattr__(self, "campaign_label", torch.zeros(n, dtype=torch.bool))
        masks = {"inside": self.inside, "campaign_label": self.campaign_label}
        if (self.values.shape != (n,) or self.source.shape != (n,) or len(self.ids) != n
                or any(m.shape != (n,) or m.dtype != torch.bool for m in masks.values())):
            raise ValueError(f"{n} crystals but values {tuple(self.values.shape)}, source "
                             f"{tuple(self.source.shape)}, {len(self.ids)} ids, "
                             + ", ".join(f"{k} {tuple(m.shape)} {m.dtype}" for k, m in masks.items()))

    def __len__(self) -> int:
        return len(self.crystals)

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources present in this set, in ``sources`` order."""
        present = set(self.source.tolist())
        return tuple(name for i, name in enumerate(self.sources) if i in present)

    def row_sources(self) -> list[str]:
        """The source name of each row."""
        return [self.sources[i] for i in self.source.tolist()]

    def subset(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> TrainingSet:
        """The rows at ``index`` (integer positions or a boolean mask)."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        rows = index.tolist()
        return TrainingSet(self.target, self.crystals[index], self.values[index], self.source[index],
                           self.sources, tuple(self.ids[i] for i in rows), self.inside[index],
                           self.campaign_label[index])

    def as_campaign_labels(self) -> TrainingSet:
        """The same rows, every one marked as the campaign's own label (``campaign_label``)."""
        return replace(self, campaign_label=torch.ones(len(self), dtype=torch.bool))

    def split(self, *, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
        """(rest, held out): a random ``fraction`` of the rows held out, reproducible by ``seed``."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_out = int(round(fraction * len(self)))
        return self.subset(order[n_out:].sort().values), self.subset(order[:n_out].sort().values)

    @classmethod
    def from_crystals(cls, crystals: Sequence[Crystal], values: Sequence[float], *, sources: Sequence[str],
                      ids: Sequence[str], target: str) -> TrainingSet:
        """Build from per-row crystals, values and source names; elements ordered by Z."""
        names = tuple(dict.fromkeys(sources))
        elements = sorted({el.symbol for c in crystals for el in c.composition}, key=lambda s: Element(s).Z)
        return cls(target=target, crystals=CrystalBatch.from_crystals(list(crystals), elements),
                   values=torch.tensor(list(values), dtype=torch.float64).reshape(-1),
                   source=torch.tensor([names.index(s) for s in sources], dtype=torch.long),
                   sources=names, ids=tuple(ids))

    @classmethod
    def concat(cls, sets: Sequence[TrainingSet]) -> TrainingSet:
        """All rows of ``sets`` (same target), over the union of their elements and of their sources."""
        if not sets:
            raise ValueError("concat needs at least one training set")
        targets = {s.target for s in sets}
        if len(targets) > 1:
            raise ValueError(f"cannot concatenate training sets of different targets {sorted(targets)}")
        sources = tuple(dict.fromkeys(name for s in sets for name in s.sources))
        remap = [torch.tensor([sources.index(name) for name in s.sources], dtype=torch.long) for s in sets]
        return cls(
            target=sets[0].target,
            crystals=CrystalBatch.concat([s.crystals for s in sets]),
            values=torch.cat([s.values for s in sets]),
            source=torch.cat([m[s.source] for m, s in zip(remap, sets, strict=True)]),
            sources=sources,
            ids=tuple(i for s in sets for i in s.ids),
            inside=torch.cat([s.inside for s in sets]),
            campaign_label=torch.cat([s.campaign_label for s in sets]),
        )
