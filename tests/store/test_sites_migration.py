"""Revisions 0003 and 0004: Wyckoff sites of candidates and materials, and where a candidate's atoms came from;
rows stored before them stay readable without."""

from __future__ import annotations

import dataclasses

from pymatgen.core import Composition
from sqlalchemy import create_engine, inspect, select, text

from aloop.space import Crystal
from aloop.store import (
    Candidate,
    Material,
    NewCandidate,
    add_candidates,
    get_or_create_campaign,
    get_or_create_material,
    labelled_data,
    open_store,
    start_round,
    upsert_label,
)

from .test_migrations import migrate, upgraded_from

ROCK_SALT = Crystal(225, Composition("Na4Cl4"), (5.6, 5.6, 5.6, 90.0, 90.0, 90.0))
SITED = dataclasses.replace(ROCK_SALT, sites=(("Na", "a"), ("Cl", "b")))
CAMPAIGN = "(SELECT id FROM campaign WHERE name = 'old')"
AT_0002 = [  # a labelled candidate and a material, as revision 0002 stored them (ids from the database's sequences)
    "INSERT INTO campaign (name, created_at) VALUES ('old', '2026-12-20 10:00:00')",
    ("INSERT INTO round (campaign_id, number, config, seed, started_at, updated_at) "
     f"VALUES ({CAMPAIGN}, 1, '{{}}', 0, '2026-12-20 10:00:00', '2026-12-20 10:00:00')"),
    ("INSERT INTO candidate (campaign_id, round_id, space_group, formula, a, b, c, alpha, beta, gamma, "
     f"canonical_hash, review, state, version, created_at, updated_at) VALUES ({CAMPAIGN}, (SELECT id FROM round), "
     f"225, 'Na4 Cl4', 5.6, 5.6, 5.6, 90, 90, 90, '{ROCK_SALT.canonical_hash}', 'approved', 'labelled', 3, "
     "'2026-12-20 10:00:00', '2026-12-20 10:00:00')"),
    ("INSERT INTO material (campaign_id, key, formula, space_group, a, b, c, alpha, beta, gamma, source, "
     f"created_at) VALUES ({CAMPAIGN}, 'k1', 'Mg4 O4', 225, 4.2, 4.2, 4.2, 90, 90, 90, 'import', "
     "'2026-12-20 10:00:00')"),
    ("INSERT INTO label (candidate_id, oracle, fidelity, property, value, metadata, status, created_at, updated_at) "
     "VALUES ((SELECT id FROM candidate), 'chgnet', 0.5, 'formation_energy_per_atom', -2.0, '{}', 'ok', "
     "'2026-12-20 10:00:00', '2026-12-20 10:00:00')"),
]


def test_rows_of_0002_are_read_without_sites_and_new_rows_keep_theirs(store_url: str) -> None:
    store = upgraded_from(store_url, "0002", AT_0002)
    try:
        with store.session() as session:
            old = session.scalars(select(Candidate)).one()
            assert old.wyckoff is None and old.origin is None and old.crystal == ROCK_SALT and old.crystal.sites == ()
            assert old.crystal.canonical_hash == old.canonical_hash  # the hash of a crystal without sites is unchanged
            assert session.scalars(select(Material)).one().crystal == Crystal(225, Composition("Mg4O4"),
                                                                              (4.2,) * 3 + (90.0,) * 3)
            campaign = get_or_create_campaign(session, "old")
            round_ = start_round(session, campaign, config={}, seed=1)
            [new] = add_candidates(session, round_, [NewCandidate(SITED, origin="template mp-22862")])  # with sites
            material = get_or_create_material(session, campaign, composition=SITED.composition, crystal=SITED,
                                              source="import")
            upsert_label(session, material_id=material.id, oracle="import", fidelity=1.0,
                         property="formation_energy_per_atom", value=-2.1)
        with store.session() as session:
            assert session.scalars(select(Candidate.wyckoff).where(Candidate.id == new.id)).one() == "Na:4a Cl:4b"
            assert session.get(Candidate, new.id).origin == "template mp-22862"
            assert session.get(Candidate, new.id).crystal == SITED
            assert session.get(Material, material.id).crystal.sites == SITED.sites
            points = labelled_data(session, get_or_create_campaign(session, "old"))
            assert sorted(p.crystal.wyckoff for p in points) == ["", "Na:4a Cl:4b"]
    finally:
        store.close()


def test_downgrade_to_0002_drops_the_sites_and_keeps_the_rows(store_url: str) -> None:
    store = open_store(store_url)
    with store.session() as session:
        campaign = get_or_create_campaign(session, "c")
        add_candidates(session, start_round(session, campaign, config={}, seed=0), [NewCandidate(SITED)])
    store.close()
    migrate(store_url, "0002", down=True)
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT formula FROM candidate")).scalar_one() == "Na4 Cl4"
        for table in ("candidate", "material"):
            assert "wyckoff" not in {column["name"] for column in inspect(connection).get_columns(table)}
    engine.dispose()
