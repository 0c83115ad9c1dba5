"""Checkpoints: a round trip gives the same sampler; another space or network shape fails clearly."""

import pytest
import torch

from aloop.gfn import CheckpointError, build_policy, load_checkpoint, sample, save_checkpoint, train

from .conftest import SMALL


def test_round_trip_gives_the_same_samples(small_env, tmp_path):
    torch.manual_seed(0)
    policy = build_policy(small_env, SMALL)
    train(small_env, policy, lambda batch: -batch.lattice[:, 0], steps=3, settings=SMALL, progress=False)
    path = save_checkpoint(tmp_path / "gfn.pt", small_env, policy, SMALL)
    loaded = load_checkpoint(path, small_env, settings=SMALL)
    assert torch.equal(loaded.log_z, policy.log_z) and loaded.log_z != 0
    first, second = sample(small_env, policy, 500, seed=3), sample(small_env, loaded, 500, seed=3)
    assert torch.equal(first.space_group, second.space_group) and torch.equal(first.lattice, second.lattice)


def test_loading_into_another_space_or_shape_fails_clearly(small_env, tiny_env, tmp_path):
    path = save_checkpoint(tmp_path / "gfn.pt", small_env, build_policy(small_env, SMALL), SMALL)
    with pytest.raises(CheckpointError, match="another crystal space") as err:
        load_checkpoint(path, tiny_env, settings=SMALL)
    assert "['Na', 'F']" in str(err.value) and "['Fe', 'O']" in str(err.value)  # both spaces described
    with pytest.raises(CheckpointError, match=r"gfn.hidden_dim=64 \(checkpoint: 32\)"):
        load_checkpoint(path, small_env, settings=SMALL.model_copy(update={"hidden_dim": 64}))
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage, small_env, settings=SMALL)
