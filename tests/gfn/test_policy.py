"""The policy network: uniform when untrained, Beta mixtures that are proper densities, batch shapes."""

import torch

from aloop.gfn.policy import CrystalPolicy, _one_hot_sum, beta_mixture_log_prob, sample_beta_mixture


def _policy(**changes) -> CrystalPolicy:
    options = dict(n_groups=5, n_elements=3, max_count=4, max_atoms=10, letter_prior=torch.zeros(5, 4),
                   hidden_dim=16, n_layers=2, n_components=3)
    return CrystalPolicy(**{**options, **changes})


def _states(n: int, policy: CrystalPolicy | None = None):
    step = torch.randint(0, 8, (n,))
    placed = torch.randint(0, 3, (n, 4))
    sites = (policy or _policy()).site_features(placed, placed // 2, torch.randint(0, 5, (n,)))
    return (step, torch.randint(-1, 8, (n,)), torch.randint(-1, 3, (n,)), torch.randint(-1, 5, (n,)),
            torch.randint(0, 5, (n, 3)), torch.randint(-1, 3, (n,)), sites)


def test_absent_and_all_zero_site_features_encode_the_same_state():
    # rollout passes no site features before the Wyckoff stage, log_prob passes zeros for those steps:
    # both must score the same policy
    torch.manual_seed(0)
    policy = _policy()
    step, system, symmetry, group, counts, _, _ = _states(7, policy)
    none_yet = policy.site_features(torch.zeros(7, 4, dtype=torch.long), torch.zeros(7, 4, dtype=torch.long),
                                    torch.zeros(7, dtype=torch.long))
    assert not none_yet.any()
    assert torch.equal(policy.trunk(step, system, symmetry, group, counts),
                       policy.trunk(step, system, symmetry, group, counts, sites=none_yet))


def test_states_one_orbit_apart_are_far_apart_in_the_trunk_input():
    # one-hot codes: one more orbit on a letter moves the input by a whole weight column
    policy = _policy()
    empty = torch.zeros(1, 4, dtype=torch.long)
    one, two = torch.tensor([[1, 0, 0, 0]]), torch.tensor([[2, 0, 0, 0]])
    remaining = torch.tensor([2])
    inputs = [_one_hot_sum(policy.sites_projection, policy.site_features(p, empty, remaining), policy._site_sizes)
              for p in (empty, one, two)]
    assert (inputs[2] - inputs[1]).norm() > 0.5 * (inputs[1] - inputs[0]).norm() > 0


def test_one_hot_codes_are_summed_as_the_dense_one_hot_product_would():
    # the trunk sums weight columns instead of multiplying a one-hot matrix: same values, same gradients
    torch.manual_seed(0)
    layer = torch.nn.Linear(3 * 4 + 6, 5, bias=False)
    sizes = torch.tensor([4, 4, 4, 6])
    values = torch.randint(-1, 9, (40, 4))
    values[::5] = 0  # rows without any set entry
    dense = torch.cat([torch.nn.functional.one_hot(values[:, f].clamp(0, int(n)), int(n) + 1)[:, 1:]
                       for f, n in enumerate(sizes)], dim=1).float()
    summed = _one_hot_sum(layer, values, sizes)
    assert torch.allclose(summed, layer(dense), atol=1e-6) and not summed[::5].any()
    (grad_summed,) = torch.autograd.grad(summed.square().sum(), layer.weight)
    (grad_dense,) = torch.autograd.grad(layer(dense).square().sum(), layer.weight)
    assert torch.allclose(grad_summed, grad_dense, atol=1e-5)


def test_untrained_policy_is_uniform_with_uniform_lattice_coordinates():
    policy = _policy()
    h = policy.trunk(*_states(11))
    assert h.shape == (11, 16)
    for head, width in [(policy.lattice_system_head, 8), (policy.point_symmetry_head, 3), (policy.group_head, 5),
                        (policy.count_head, 5), (policy.letter_head, 4)]:
        logits = head(h)
        assert logits.shape == (11, width) and torch.equal(logits, torch.zeros_like(logits))
    params = policy.lattice_params(h)
    assert params.shape == (11, 6, 3, 3)
    density = beta_mixture_log_prob(params, torch.rand(11, 6))
    assert torch.allclose(density, torch.zeros_like(density), atol=1e-5)  # Beta(1, 1) on [0, 1]
    assert float(policy.log_z.detach()) == 0.0


def test_beta_mixture_is_a_density_and_sampling_matches_it():
    torch.manual_seed(0)
    params = torch.randn(4, 6, 3, 3) * 2
    params[..., 1:] = params[..., 1:].abs()  # concentrations >= 1: bounded densities, exact quadrature
    grid = torch.linspace(0, 1, 20_001)[1:-1]
    density = beta_mixture_log_prob(params.unsqueeze(0).expand(len(grid), -1, -1, -1, -1).reshape(-1, 6, 3, 3),
                                    grid.repeat_interleave(4).unsqueeze(1).expand(-1, 6)).exp()
    integral = torch.trapezoid(density.view(len(grid), 4, 6), grid, dim=0)
    assert torch.allclose(integral, torch.ones(4, 6), atol=2e-2)
    mean = torch.trapezoid(density.view(len(grid), 4, 6) * grid.view(-1, 1, 1), grid, dim=0)
    draws = sample_beta_mixture(params.repeat(20_000, 1, 1, 1))
    assert ((draws > 0) & (draws < 1)).all()
    assert torch.allclose(draws.view(20_000, 4, 6).mean(dim=0), mean, atol=1e-2)


def test_zero_temperature_limit_picks_the_heaviest_component():
    params = torch.zeros(1, 6, 2, 3)
    params[..., 0, 0] = 1.0  # component 0 slightly heavier
    params[..., 0, 1] = 20.0  # component 0: Beta(large, 1), mass near 1
    params[..., 1, 2] = 20.0  # component 1: Beta(1, large), mass near 0
    cold = sample_beta_mixture(params.repeat(2000, 1, 1, 1), temperature=0.05)
    assert (cold > 0.5).float().mean() > 0.99


def _fit_lattice_head(policy: CrystalPolicy, h: torch.Tensor, data: torch.Tensor, steps: int = 150) -> None:
    """Maximum likelihood of ``data`` ``(N, 6)`` under the lattice head at fixed trunk outputs ``h``."""
    optimizer = torch.optim.Adam(policy.lattice_head.parameters(), lr=0.03)
    for _ in range(steps):
        loss = -beta_mixture_log_prob(policy.lattice_params(h), data).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_untrained_mixture_components_differ_so_training_can_fit_two_peaks():
    torch.manual_seed(0)
    policy = _policy()
    h = torch.ones(400, 16)
    peaks = torch.where(torch.rand(400, 6) < 0.5, torch.distributions.Beta(20.0, 60.0).sample((400, 6)),
                        torch.distributions.Beta(60.0, 20.0).sample((400, 6)))
    _fit_lattice_head(policy, h, peaks)
    at = beta_mixture_log_prob(policy.lattice_params(h[:3]), torch.tensor([[0.25], [0.5], [0.75]]).expand(3, 6)).exp()
    # identical starting components would stay one Beta: a single bump, never two peaks
    assert (at[0] > 3 * at[1]).all() and (at[2] > 3 * at[1]).all()


def test_untrained_letter_logits_are_the_weighted_prior_of_the_group():
    prior = torch.log_softmax(torch.randn(5, 4), dim=1)
    policy = _policy(letter_prior=0.5 * prior)
    h = policy.trunk(*_states(6))
    group = torch.tensor([0, 1, 2, 3, 4, 4])
    assert torch.allclose(policy.letter_logits(h, group), 0.5 * prior[group])
    assert "letter_prior" not in policy.state_dict()  # comes from the settings, not the checkpoint
