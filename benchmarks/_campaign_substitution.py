"""Ion substitution baseline: known Materials Project structures with ions swapped into the searched space.

The product's ion substitution (``aloop.substitution``, pymatgen's data-mined model of Hautier et al.,
Inorg. Chem. 50, 656 (2011)) on the ``mp_cgcnn36k`` structures of the source chemistries, at ``THRESHOLD``
and with the mixed-valence targets (``aloop.substitution.substitution_pool``, built once and cached).

**Widened in campaign v2** so that the arm does not run dry at 4 rounds of 16 calls: v1's pool
(threshold 1e-3, one species per element) held 234 Li-Mn-O structures of which 89 are novel and
distinct from each other, and for Fe-O only 71 (38 novel and distinct, all FeO and Fe2O3).
Lowering the threshold alone brings more copies of the same prototypes (Fe-O at 1e-5: 259
structures, 39 novel and distinct); v2 lowers it to ``THRESHOLD`` = 1e-4 and adds the
mixed-valence targets, whose ternary sources (A2+ B3+ oxides) give the mixed-valence
compositions (Fe3O4, Fe4O5, Li-Mn-O with Mn3+ and Mn4+) that one species per element cannot reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLD = 1e-4
"""Probability threshold of the substitution model (pymatgen's default is 1e-3, campaign v1's)."""


def seeded_order(probabilities: Sequence[float], *, seed: int) -> np.ndarray:
    """A seeded ranking drawn without replacement with weights proportional to ``probabilities``.

    Gumbel top-k: ``argsort(-(log p + Gumbel noise))``; the most probable substitutions tend
    to come first, and seeds differ where probabilities are close.
    """
    rng = np.random.default_rng(seed)
    keys = np.log(np.asarray(probabilities, dtype=float)) + rng.gumbel(size=len(probabilities))
    return np.argsort(-keys, kind="stable")
