"""The proposal path shared by the round and the campaign: reward, generator training, batch choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure

from aloop.acquisition import best_observed
from aloop.config import CONFIG_DIR, AcquisitionSettings, load_config
from aloop.gfn import CrystalEnv, CrystalPolicy, build_policy, save_checkpoint
from aloop.proposal import Proposal, generator_reward, propose_batch, train_generator
from aloop.selection import KnownMaterials, diversity_key
from aloop.gfn.sampler import rollout
from aloop.space import CrystalBatch, CrystalSpace, Placement, placed_structure, valid_mask
from aloop.space.supergroup import forced_supergroup
from aloop.space.templates import TemplatePool, template_of


@pytest.fixture
def setting(smoke_problem):
    """The smoke space, a proxy fitted on 60 of its crystals with a smooth synthetic target, and its data."""
    return smoke_problem.cfg, smoke_problem.env, smoke_problem.train, smoke_problem.proxy


def propose(setting, known: KnownMaterials | None = None, *, seed: int = 0) -> Proposal:
    cfg, env, data, proxy = setting
    torch.manual_seed(0)
    policy = build_policy(env, cfg.gfn)
    return propose_batch(data, proxy, env, policy, known or KnownMaterials.from_sources(),
                         acquisition=cfg.acquisition, selection=cfg.selection, seed=seed, threads=1)


def test_the_batch_is_valid_distinct_and_led_by_the_best_acquisition(setting):
    cfg = setting[0]
    proposal = propose(setting)
    n = cfg.selection.n_samples
    assert len(proposal.samples) == n and proposal.log_reward.shape == (n,) and proposal.valid.shape == (n,)
    assert torch.equal(proposal.valid, valid_mask(proposal.samples, setting[1].space))
    valid = int(proposal.valid.sum())
    assert proposal.acquisition.shape == proposal.prediction.mean.shape == proposal.prediction.std.shape == (valid,)
    batch = proposal.batch
    assert 0 < len(batch) == len(proposal.structures) <= cfg.selection.batch_size
    assert len({diversity_key(c) for c in batch}) == len(batch)
    for crystal, structure in zip(batch, proposal.structures, strict=True):
        assert structure.composition.reduced_formula == crystal.composition.reduced_formula
    # greedy: the first pick is the best sample but for those passed over (duplicate, known, unplaceable)
    rank = int((proposal.acquisition > proposal.acquisition[proposal.chosen[0]]).sum())
    assert rank <= sum(proposal.skipped.values())
    assert proposal.acquisition[list(proposal.chosen)].mean() > proposal.acquisition.mean()


def test_the_batch_has_no_sites_that_force_a_higher_group(setting):
    # 40% of the untrained smoke generator's valid samples are such sets: some rank high and are passed over
    proposal = propose(setting)
    batch = CrystalBatch.from_crystals(proposal.batch, setting[1].space.elements)
    assert not forced_supergroup(batch).any()
    assert proposal.skipped.get("forced_group", 0) >= 1


def test_a_known_structure_is_never_proposed_again(setting):
    first = propose(setting)
    known = KnownMaterials.from_sources(structures=first.structures[:1])
    again = propose(setting, known)
    assert first.batch[0].canonical_hash not in {c.canonical_hash for c in again.batch}
    assert again.skipped.get("known", 0) >= 1


def test_the_same_seed_gives_the_same_proposal_and_it_survives_a_save(setting, tmp_path: Path):
    first, second, other = propose(setting), propose(setting), propose(setting, seed=1)
    assert first.chosen == second.chosen and torch.equal(first.samples.counts, second.samples.counts)
    assert not torch.equal(first.samples.counts, other.samples.counts)
    first.save(tmp_path / "proposal.pt")
    loaded = Proposal.load(tmp_path / "proposal.pt")
    assert [c.canonical_hash for c in loaded.batch] == [c.canonical_hash for c in first.batch]
    assert torch.equal(loaded.acquisition, first.acquisition) and torch.equal(loaded.valid, first.valid)
    assert torch.equal(loaded.prediction.mean, first.prediction.mean) and loaded.skipped == first.skipped
    assert [s.composition for s in loaded.structures] == [s.composition for s in first.structures]


def test_best_observed_is_on_the_acquisition_scale():
    values = torch.tensor([-1.0, -2.5, 0.3, 1.5], dtype=torch.float64)
    settings = AcquisitionSettings(band_gap_target=1.34)
    assert best_observed(values, settings, target="formation_energy_per_atom") == -2.5
    assert best_observed(values, settings, target="band_gap") == pytest.approx(-0.16)  # 1.5 is closest to 1.34


def test_the_generator_warm_starts_from_a_checkpoint_of_its_space_only(setting, tmp_path: Path):
    cfg, env, data, proxy = setting
    reward = generator_reward(proxy, data, cfg.acquisition)
    settings = cfg.gfn.model_copy(update={"train_steps": 3})
    cold = train_generator(env, reward, settings, warm_start=tmp_path / "missing.pt")
    assert cold.start == "cold start" and len(cold.history.loss) == 3
    path = save_checkpoint(tmp_path / "gfn.pt", env, cold.policy, settings)
    warm = train_generator(env, reward, settings, warm_start=path)
    assert warm.start == f"warm start from {path}"
    other = load_config(CONFIG_DIR / "smoke.yaml", ["space.elements=[Fe, O]"])
    other_env = CrystalEnv.from_space(CrystalSpace.from_settings(other.space), other.gfn)
    foreign = save_checkpoint(tmp_path / "other.pt", other_env, build_policy(other_env, other.gfn), settings)
    assert train_generator(env, reward, settings, warm_start=foreign).start.startswith("cold start: ")


def test_templates_steer_the_reward_only_where_some_exist(setting):
    cfg, env, data, proxy = setting
    torch.manual_seed(0)
    samples = env.to_batch(rollout(env, build_policy(env, cfg.gfn), 200, epsilon=1.0))
    plain = generator_reward(proxy, data, cfg.acquisition)(samples)
    # no template at all (a cold start): every crystal would lose the same, so none does
    assert torch.equal(generator_reward(proxy, data, cfg.acquisition, placement=Placement(TemplatePool.build([])))(
        samples), plain)
    pool = TemplatePool.build([template_of(Structure.from_spacegroup(
        225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "NaCl")])
    fits = pool.prototypes().known(samples)
    assert fits.any() and not fits.all()  # rock-salt sites (4a, 4b) among the uniform samples
    steered = generator_reward(proxy, data, cfg.acquisition, placement=Placement(pool))(samples)
    assert torch.equal(steered[fits], plain[fits])
    lowered = (plain[~fits] - cfg.acquisition.untemplated_penalty / cfg.acquisition.temperature).clamp(
        min=cfg.acquisition.log_reward_min)
    torch.testing.assert_close(steered[~fits], lowered)


def test_substituted_structures_compete_on_the_same_acquisition_and_keep_their_atoms(setting, tmp_path: Path):
    from aloop.acquisition import acquisition_values
    from aloop.proposal import objective
    from aloop.space import Crystal
    from aloop.substitution import SubstitutedStructure

    cfg, env, data, proxy = setting
    structures = [Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.4), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                  Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.4, 2.9), ["Mn", "O"],
                                            [[0, 0, 0], [0.3, 0.3, 0]])]
    substituted = [SubstitutedStructure(0.01, f"mp-{i}", s, Crystal.from_structure(s)) for i, s in enumerate(structures)]
    torch.manual_seed(0)
    policy = build_policy(env, cfg.gfn)
    everything = cfg.selection.model_copy(update={"batch_size": 1000, "n_samples": 40})  # every distinct novel one
    proposal = propose_batch(data, proxy, env, policy, KnownMaterials.from_sources(), acquisition=cfg.acquisition,
                             selection=everything, seed=0, threads=1, substituted=substituted)

    valid = int(proposal.valid.sum())
    assert len(proposal.candidates) == len(proposal.acquisition) == len(proposal.prediction.mean) == valid + 2
    target, best_f = objective(proxy, data, cfg.acquisition, None)
    own = acquisition_values(proxy, cfg.acquisition, CrystalBatch.from_crystals([s.crystal for s in substituted],
                                                                                env.space.elements),
                             target=target, best_f=best_f)
    torch.testing.assert_close(proposal.acquisition[valid:], own)
    picked = {i - valid: structure for i, structure in zip(proposal.chosen, proposal.structures, strict=True)
              if i >= valid}
    assert picked and proposal.chosen_substituted == len(picked)
    for k, structure in picked.items():
        assert structure is structures[k]  # sent as substituted, not placed again
    proposal.save(tmp_path / "proposal.pt")
    loaded = Proposal.load(tmp_path / "proposal.pt")
    assert loaded.batch == proposal.batch and loaded.chosen_substituted == proposal.chosen_substituted


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_substitution_share_keeps_its_places(setting, share):
    from aloop.space import Crystal
    from aloop.substitution import SubstitutedStructure

    cfg, env, data, proxy = setting
    structures = [Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
                  for a in (4.4, 4.9)] + [Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.4, 2.9), ["Mn", "O"],
                                                                     [[0, 0, 0], [0.3, 0.3, 0]])]
    substituted = [SubstitutedStructure(0.01, f"mp-{i}", s, Crystal.from_structure(s)) for i, s in enumerate(structures)]
    torch.manual_seed(0)
    selection = cfg.selection.model_copy(update={"batch_size": 4, "substitution_share": share})
    proposal = propose_batch(data, proxy, env, build_policy(env, cfg.gfn), KnownMaterials.from_sources(),
                             acquisition=cfg.acquisition, selection=selection, seed=0, threads=1,
                             substituted=substituted)
    # share 1: both distinct substituted crystals (the two rock salts share a diversity key), samples fill the rest
    assert proposal.chosen_substituted == (2 if share else 0) and len(proposal.batch) == 4


def collapsed_policy(env: CrystalEnv, cfg) -> CrystalPolicy:
    """A generator sharply peaked on a few crystals: every head's bias drawn at scale 60 (its 200 samples hold
    about 3 distinct crystals at temperature 1, 11 at 4)."""
    torch.manual_seed(0)
    policy = build_policy(env, cfg.gfn)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if name.endswith("head.bias"):
                parameter.copy_(60 * torch.randn(parameter.shape))
    return policy


def test_a_collapsed_generator_still_fills_the_batch_from_draws_at_higher_temperatures(setting, tmp_path: Path,
                                                                                       monkeypatch):
    cfg, env, data, proxy = setting
    policy = collapsed_policy(env, cfg)
    placements = []

    def counted(crystal, **kwargs):
        placements.append((crystal.canonical_hash, tuple(crystal.lattice)))
        return placed_structure(crystal, **kwargs)

    monkeypatch.setattr("aloop.proposal.placed_structure", counted)

    def propose_with(**update) -> Proposal:
        return propose_batch(data, proxy, env, policy, KnownMaterials.from_sources(), acquisition=cfg.acquisition,
                             selection=cfg.selection.model_copy(update={"batch_size": 8, **update}), seed=0,
                             threads=1)

    short = propose_with(fill_temperatures=[])
    assert short.temperatures == (1.0,) and len(short.chosen) < 8  # the short batch a collapsed generator gives
    placements.clear()
    filled = propose_with()
    n = cfg.selection.n_samples
    assert len(filled.chosen) == 8 and len({diversity_key(c) for c in filled.batch}) == 8
    assert filled.temperatures == (1.0, 2.0, 4.0, 8.0)[:len(filled.temperatures)] and len(filled.temperatures) > 1
    assert len(filled.samples) == n * len(filled.temperatures) and filled.log_reward.shape == (len(filled.samples),)
    assert torch.equal(filled.samples[torch.arange(n)].counts, short.samples.counts)  # the fill adds, never redraws
    assert filled.acquisition.shape == (int(filled.valid.sum()),)
    filled.save(tmp_path / "proposal.pt")
    assert Proposal.load(tmp_path / "proposal.pt").temperatures == filled.temperatures
    # the fill's second selection walks the first draw's crystals again (the untrained generator's, a batch larger
    # than them all): each is placed once
    placements.clear()
    torch.manual_seed(0)
    everything = propose_batch(data, proxy, env, build_policy(env, cfg.gfn), KnownMaterials.from_sources(),
                               acquisition=cfg.acquisition, seed=0, threads=1, selection=cfg.selection.model_copy(
                                   update={"batch_size": 1000, "fill_temperatures": [2.0]}))
    assert everything.temperatures == (1.0, 2.0) and len(placements) == len(set(placements)) > n / 2
