"""``gfn.device``: the environment, the policy and sampling on the configured device; rewards, proposals and
checkpoints on CPU. Each device test runs on CPU, and on CUDA where there is one (marked ``gpu``)."""

from __future__ import annotations

import math

import pytest
import torch

from aloop.data.cold_start import initial_design
from aloop.gfn import CrystalEnv, build_policy, load_checkpoint, sample, save_checkpoint, train
from aloop.proposal import generator_reward, propose_batch, train_generator
from aloop.selection import KnownMaterials

from .conftest import SMALL

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


def _log_reward(batch):
    return -batch.lattice[:, 0].float()


def test_the_environment_is_built_on_the_named_device(small_env):
    assert small_env.device.type == "cpu"  # the default: CPU, as the fixtures build it
    auto = CrystalEnv.from_space(small_env.space, SMALL, device="auto")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert build_policy(auto, SMALL).log_z.device == auto.device
    assert auto.fingerprint() == small_env.fingerprint()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_an_environment_on_missing_cuda_is_a_clear_error(small_env):
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        CrystalEnv.from_space(small_env.space, SMALL, device="cuda")


@pytest.mark.parametrize("device", DEVICES)
def test_training_sampling_and_checkpoints_on_the_device(small_env, tmp_path, device):
    env = CrystalEnv.from_space(small_env.space, SMALL, device=device)
    torch.manual_seed(0)
    policy = build_policy(env, SMALL)
    history = train(env, policy, _log_reward, steps=20, settings=SMALL, progress=False)
    assert len(history.loss) == 20 and all(math.isfinite(loss) for loss in history.loss)
    batch = sample(env, policy, 500, seed=3)
    assert batch.space_group.device.type == device and len(batch) == 500
    assert torch.equal(batch.lattice, sample(env, policy, 500, seed=3).lattice)
    path = save_checkpoint(tmp_path / "gfn.pt", env, policy, SMALL)
    on_cpu = load_checkpoint(path, small_env, settings=SMALL)  # a GPU checkpoint loads on a machine without one
    on_device = load_checkpoint(path, env, settings=SMALL)
    assert on_cpu.log_z.device.type == "cpu" and on_device.log_z.device.type == device
    assert torch.equal(on_device.log_z, policy.log_z) and torch.equal(on_cpu.log_z, policy.log_z.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_the_proposal_trains_on_the_device_and_comes_back_on_cpu(smoke_problem, device):
    cfg, data, proxy = smoke_problem.cfg, smoke_problem.train, smoke_problem.proxy
    env = CrystalEnv.from_space(smoke_problem.env.space, cfg.gfn, device=device)
    torch.manual_seed(0)
    generator = train_generator(env, generator_reward(proxy, data, cfg.acquisition), cfg.gfn)
    assert generator.policy.log_z.device.type == device and len(generator.history.loss) == cfg.gfn.train_steps
    proposal = propose_batch(data, proxy, env, generator.policy, KnownMaterials.from_sources(),
                             acquisition=cfg.acquisition, selection=cfg.selection, seed=0, threads=1)
    for tensor in (proposal.samples.lattice, proposal.log_reward, proposal.valid, proposal.acquisition,
                   proposal.prediction.mean):
        assert tensor.device.type == "cpu"
    assert 0 < len(proposal.chosen) <= cfg.selection.batch_size and torch.isfinite(proposal.log_reward).all()


@pytest.mark.parametrize("device", DEVICES)
def test_the_cold_start_design_is_drawn_on_the_device(smoke_problem, device):
    settings = smoke_problem.cfg.gfn.model_copy(update={"device": device})
    first, again = (initial_design(smoke_problem.env.space, settings, 4, seed=0) for _ in range(2))
    assert len(first) == 4 and [c for c, _ in first] == [c for c, _ in again]
