"""A synthetic regression problem with known noise per source, and a proxy fitted on it once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from aloop.config import ProxySettings
from aloop.data.training import TrainingSet
from aloop.proxy import Proxy, fit_proxy
from aloop.proxy.proxy import META
from aloop.space.crystal import CrystalBatch
from aloop.space.features import feature_names, featurize

ELEMENTS = ("Li", "Mn", "O")
NOISE = {"dft": 0.05, "chgnet": 0.3}
OFFSET = {"dft": 0.0, "chgnet": 0.2}
SETTINGS = ProxySettings(inducing_points=64, hidden_dims=[64], latent_dim=8, epochs=1, min_steps=400, batch_size=256,
                         lr=0.02, validation_fraction=0.2, reference_source="dft", cell_scale=True, baseline="none",
                         hull_input=False)
"""``cell_scale``: the synthetic truth depends on volume per atom; no hull: it is a smooth function of the features
(the hull's settings are tested in ``test_baseline``)."""


def random_crystals(n: int, *, seed: int) -> CrystalBatch:
    """Cubic Li-Mn-O cells with 1-4 atoms of each element and a = 3-9 Angstrom."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 5, (n, 3), generator=g)
    groups = torch.tensor([195, 200, 215, 221, 225, 229])[torch.randint(6, (n,), generator=g)]
    a = 3.0 + 6.0 * torch.rand(n, generator=g, dtype=torch.float64)
    lattice = torch.stack([a, a, a, *(torch.full_like(a, 90.0),) * 3], dim=1)
    return CrystalBatch(ELEMENTS, groups, counts, lattice)


def truth(batch: CrystalBatch) -> torch.Tensor:
    """A smooth function of the features (eV/atom): volume per atom and composition."""
    f = featurize(batch).double()
    names = feature_names()
    volume, li, o = (f[:, names.index(k)] for k in ("log_volume_per_atom", "frac_Li", "frac_O"))
    return 0.8 * torch.sin(1.5 * volume) + li - 0.5 * o


def labelled(batch: CrystalBatch, sources: list[str], *, seed: int) -> TrainingSet:
    g = torch.Generator().manual_seed(seed)
    noise = torch.tensor([NOISE[s] for s in sources], dtype=torch.float64)
    offset = torch.tensor([OFFSET[s] for s in sources], dtype=torch.float64)
    values = truth(batch) + offset + noise * torch.randn(len(batch), generator=g, dtype=torch.float64)
    names = tuple(dict.fromkeys(sources))
    return TrainingSet("formation_energy_per_atom", batch, values,
                       torch.tensor([names.index(s) for s in sources]), names, tuple(map(str, range(len(batch)))))


@pytest.fixture(scope="session")
def problem() -> tuple[Proxy, TrainingSet, CrystalBatch]:
    """A proxy fitted on 1,200 DFT-like and 600 noisier, shifted CHGNet-like labels; 1,000 held-out DFT labels.

    A fifth of the training rows (about 240 DFT, 120 CHGNet) recalibrate the noise: enough
    for a noise estimate within about 5%, so coverage can be held close to nominal.
    """
    batch = random_crystals(2800, seed=0)
    train = labelled(batch[:1800], ["dft"] * 1200 + ["chgnet"] * 600, seed=1)
    heldout = labelled(batch[1800:], ["dft"] * 1000, seed=2)
    return fit_proxy(train, SETTINGS, seed=0), heldout, batch[1800:]



def saved_in_an_older_format(proxy: Proxy, folder: Path, edit: Callable[[dict], None]) -> Proxy:
    """``proxy`` saved to ``folder``, its metadata edited as an older version would have written it, loaded back."""
    proxy.save(folder)
    meta = json.loads((folder / META).read_text())
    edit(meta)
    (folder / META).write_text(json.dumps(meta))
    return Proxy.load(folder)
