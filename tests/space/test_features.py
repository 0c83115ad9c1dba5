"""The featurizer: batch shapes, hand-checked columns, the same features whichever path a crystal takes."""

from __future__ import annotations

import math

import pytest
import torch
from pymatgen.core import Composition, Element

from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.features import MAX_Z, feature_names, featurize

NACL = Crystal(225, Composition("Na4Cl4"), (5.64, 5.64, 5.64, 90.0, 90.0, 90.0))
FE2O3 = Crystal(167, Composition("Fe12O18"), (5.04, 5.04, 13.75, 90.0, 90.0, 120.0))


def column(name: str) -> int:
    return feature_names().index(name)


def test_batch_shape_dtype_and_finiteness() -> None:
    batch = CrystalBatch.from_crystals([NACL, FE2O3, NACL], ("O", "Na", "Cl", "Fe"))
    features = featurize(batch)
    assert features.shape == (3, len(feature_names())) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert torch.equal(features[0], features[2])
    assert featurize(batch[:0]).shape == (0, len(feature_names()))


def test_hand_checked_columns_of_rock_salt() -> None:
    f = featurize(CrystalBatch.from_crystals([NACL], ("Na", "Cl")))[0]
    assert f[column("frac_Na")] == 0.5 and f[column("frac_Cl")] == 0.5
    assert f[:MAX_Z].sum() == pytest.approx(1.0)
    assert f[column("n_elements")] == 2 and f[column("log_n_atoms")] == pytest.approx(math.log(8))
    assert f[column("norm_2")] == pytest.approx(math.sqrt(0.5))
    assert f[column("atoms_per_general_position")] == pytest.approx(8 / 192)  # Fm-3m: general position 192e
    assert f[column("volume_per_atom")] == pytest.approx(5.64**3 / 8, rel=1e-5)
    assert (f[column("cos_alpha")], f[column("a_rel")]) == (pytest.approx(0.0, abs=1e-6), pytest.approx(1.0))
    assert f[column("lattice_system_cubic")] == 1 and f[column("point_group_m-3m")] == 1
    assert f[column("point_symmetry_centrosymmetric")] == 1
    # equal fractions: the mean absolute deviation is half the range, the mean is mid-range
    for prop in ("X", "Z", "atomic_radius"):
        low, high = f[column(f"min_{prop}")], f[column(f"max_{prop}")]
        assert f[column(f"mad_{prop}")] == pytest.approx(float(high - low) / 2, abs=1e-5)
        assert f[column(f"mean_{prop}")] == pytest.approx(float(high + low) / 2, abs=1e-5)
    # Cl is more electronegative than Na: its standardised value is the max
    assert Element("Cl").X > Element("Na").X and f[column("max_X")] > f[column("min_X")]


def test_hexagonal_cell_volume_and_angles() -> None:
    f = featurize(CrystalBatch.from_crystals([FE2O3], ("Fe", "O")))[0]
    volume = 5.04 * 5.04 * 13.75 * math.sin(math.radians(120))
    assert f[column("volume_per_atom")] == pytest.approx(volume / 30, rel=1e-5)
    assert f[column("cos_gamma")] == pytest.approx(-0.5, abs=1e-6)
    assert f[column("lattice_system_trigonal_rhombohedral")] == 1


def test_element_order_does_not_matter() -> None:
    forward = featurize(CrystalBatch.from_crystals([NACL, FE2O3], ("Na", "Cl", "Fe", "O")))
    backward = featurize(CrystalBatch.from_crystals([NACL, FE2O3], ("O", "Fe", "Cl", "Na")))
    torch.testing.assert_close(forward, backward)


def test_elements_beyond_plutonium_are_refused() -> None:
    batch = CrystalBatch.from_crystals([Crystal(225, Composition("Am4O8"), (5.4,) * 3 + (90.0,) * 3)], ("Am", "O"))
    with pytest.raises(ValueError, match="'Am'.*Z = 1..94"):
        featurize(batch)
