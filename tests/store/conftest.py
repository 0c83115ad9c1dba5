"""Crystals and a campaign with one round, for the store tests."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition

from aloop.space import Crystal
from aloop.store import Campaign, Round, Store, get_or_create_campaign, start_round


def rock_salt(a: float, formula: str = "Na4Cl4") -> Crystal:
    """A cubic rock-salt crystal (space group 225) with lattice constant ``a`` (Angstrom)."""
    return Crystal(225, Composition(formula), (a, a, a, 90.0, 90.0, 90.0))


@pytest.fixture
def campaign_round(store: Store) -> tuple[Campaign, Round]:
    """Campaign ``test`` with its first round."""
    with store.session() as session:
        campaign = get_or_create_campaign(session, "test")
        return campaign, start_round(session, campaign, config={"seed": 7}, seed=7)
