"""Forward policy of the Crystal-GFN: a shared MLP trunk, one head per stage, learned log Z.

The state of a trajectory is encoded as a sum of embeddings (step, lattice system, point
symmetry, space group, the element being placed; an extra "unset" index for choices not
made yet) plus linear maps of one-hot codes of the counts chosen so far (per element, and
the total) and of the Wyckoff orbits placed so far (per letter: other elements, the current
element; and the atoms it has left). One-hot codes give every partial state its own
direction in the trunk's input: with the counts as scaled scalars (one input per letter),
states that differ by one orbit were nearly collinear, and ``benchmarks.gfn_correctness``
(602 Fe-O states, random rewards) reached a log-frequency correlation of 0.85 after 2,000
steps where one-hot codes reach 0.98. These maps have no bias, so features that are absent
(before the Wyckoff stage) and all-zero features encode the same state. Heads
give logits for the discrete stages and the parameters of a mixture of Beta distributions
for each of the six lattice coordinates (in the unit interval; ``aloop.gfn.cell`` maps
them to a valid cell). The letter logits add a fixed prior per (group, letter)
(``aloop.gfn.wyckoff.letter_prior`` times ``gfn.wyckoff_prior_weight``), so an untrained
policy places orbits as known crystals do, and training can move away from it.

All head weights start at zero, so an untrained policy is uniform over the allowed
actions. Its lattice coordinates are uniform on [0, 1] too, but through distinct
components: with C components, equal weights on Beta(k, C + 1 - k), k = 1..C (the
Bernstein basis, which sums to one). Identical starting components would get identical
gradients and stay one Beta forever.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Beta, Categorical

from aloop.space.groups import N_LATTICE_SYSTEMS, N_POINT_SYMMETRIES

N_LATTICE_COORDS = 6
MIN_CONCENTRATION = 0.1
MAX_CONCENTRATION = 500.0
ONE_HOT_INIT_STD = 0.3
"""Initial scale of the weights of the one-hot count and orbit features."""
UNIT_EPS = 1e-6
"""Beta log densities are evaluated on [UNIT_EPS, 1 - UNIT_EPS] to stay finite."""


class CrystalPolicy(nn.Module):
    """Forward policy P_F and log Z over the fixed-order crystal construction.

    Args:
        n_groups: number of allowed space groups (G).
        n_elements: number of elements (E).
        max_count: largest count of one element (K); count actions are ``0..K``.
        letter_prior: ``(G, W)`` fixed logit bias of the Wyckoff letters per group (W letters),
            already weighted.
        max_atoms: largest total atom count (size of the total's one-hot code).
        hidden_dim: width of the trunk.
        n_layers: number of hidden layers of the trunk (the embedding sum is the first).
        n_components: Beta mixture components per lattice coordinate.
    """

    def __init__(self, *, n_groups: int, n_elements: int, max_count: int, max_atoms: int,
                 letter_prior: torch.Tensor, hidden_dim: int, n_layers: int, n_components: int) -> None:
        super().__init__()
        n_letters = int(letter_prior.shape[1])
        self.n_components = n_components
        self.max_count = max_count
        self.max_atoms = max_atoms
        self.register_buffer("letter_prior", letter_prior.float(), persistent=False)
        self.register_buffer("_count_sizes", torch.tensor([max_count] * n_elements + [max_atoms]), persistent=False)
        self.register_buffer("_site_sizes", torch.full((2 * n_letters + 1,), max_count), persistent=False)
        self.step_embedding = nn.Embedding(n_elements + 5, hidden_dim)
        self.element_embedding = nn.Embedding(n_elements + 1, hidden_dim)
        self.sites_projection = _one_hot_projection((2 * n_letters + 1) * max_count, hidden_dim)
        self.lattice_system_embedding = nn.Embedding(N_LATTICE_SYSTEMS + 1, hidden_dim)
        self.point_symmetry_embedding = nn.Embedding(N_POINT_SYMMETRIES + 1, hidden_dim)
        self.group_embedding = nn.Embedding(n_groups + 1, hidden_dim)
        self.counts_projection = _one_hot_projection(n_elements * max_count + max_atoms, hidden_dim)
        self.hidden = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n_layers - 1))
        self.lattice_system_head = nn.Linear(hidden_dim, N_LATTICE_SYSTEMS)
        self.point_symmetry_head = nn.Linear(hidden_dim, N_POINT_SYMMETRIES)
        self.group_head = nn.Linear(hidden_dim, n_groups)
        self.count_head = nn.Linear(hidden_dim, max_count + 1)
        self.letter_head = nn.Linear(hidden_dim, n_letters)
        self.lattice_head = nn.Linear(hidden_dim, N_LATTICE_COORDS * n_components * 3)
        for head in (self.lattice_system_head, self.point_symmetry_head, self.group_head, self.count_head,
                     self.letter_head, self.lattice_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        with torch.no_grad():
            bias = self.lattice_head.bias.view(N_LATTICE_COORDS, n_components, 3)  # logit, raw alpha, raw beta
            bias[..., 1:] = _bernstein_log_concentrations(n_components)
        self.log_z = nn.Parameter(torch.zeros(()))

    def trunk(self, step: torch.Tensor, lattice_system: torch.Tensor, point_symmetry: torch.Tensor,
              group: torch.Tensor, counts: torch.Tensor, element: torch.Tensor | None = None,
              sites: torch.Tensor | None = None) -> torch.Tensor:
        """Encode partial states -> ``(B, H)``.

        Args:
            step: ``(B,)`` long, kind of the next action: 0 system, 1 class, 2 group, 3..E+2
                counts, E+3 a Wyckoff orbit, E+4 the lattice.
            lattice_system: ``(B,)`` long, 0..7, or -1 while unset.
            point_symmetry: ``(B,)`` long, 0..2, or -1 while unset.
            group: ``(B,)`` long, index into the allowed groups, or -1 while unset.
            counts: ``(B, E)`` long, counts chosen so far (0 for elements not reached).
            element: ``(B,)`` long, the element whose orbit is next, -1 (or None) otherwise.
            sites: ``(B, 2W+1)`` long, ``site_features`` of the orbits so far (None, or zeros: none yet).
        """
        return self.hidden_state(self.choices_input(step, lattice_system, point_symmetry, group, counts), element,
                                 sites)

    def choices_input(self, step: torch.Tensor, lattice_system: torch.Tensor, point_symmetry: torch.Tensor,
                      group: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` the trunk's input from the step and the choices before the Wyckoff stage (arguments as
        ``trunk``'s). The same for every orbit of a crystal: the rollout encodes it once for its Wyckoff stage."""
        counts = counts.long()
        return (self.step_embedding(step)
                + self.lattice_system_embedding(_unset_last(lattice_system, N_LATTICE_SYSTEMS))
                + self.point_symmetry_embedding(_unset_last(point_symmetry, N_POINT_SYMMETRIES))
                + self.group_embedding(_unset_last(group, self.group_embedding.num_embeddings - 1))
                + _one_hot_sum(self.counts_projection, torch.cat([counts, counts.sum(dim=1, keepdim=True)], dim=1),
                               self._count_sizes))

    def hidden_state(self, x: torch.Tensor, element: torch.Tensor | None = None,
                     sites: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, H)`` the trunk's output from ``choices_input`` plus the Wyckoff stage's element and sites."""
        if element is not None:
            x = x + self.element_embedding(_unset_last(element, self.element_embedding.num_embeddings - 1))
        if sites is not None:
            x = x + _one_hot_sum(self.sites_projection, sites, self._site_sizes)
        h = nn.functional.silu(x)
        for layer in self.hidden:
            h = nn.functional.silu(layer(h))
        return h

    def letter_logits(self, h: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """``(B, W)`` logits of the next orbit's Wyckoff letter: the head plus the prior."""
        return self.letter_head(h) + self.letter_prior[group]

    def site_features(self, placed: torch.Tensor, mine: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """``(B, 2W+1)`` trunk input of the Wyckoff stage, each one-hot coded by the trunk: per letter, the
        orbits of the other elements and of the current one on it so far (1..K, more counts as K), and the
        current element's atoms left (1..K); all zero before any orbit and outside the Wyckoff stage."""
        return torch.cat([placed - mine, mine, remaining.unsqueeze(1)], dim=1).clamp(0, self.max_count)

    def lattice_params(self, h: torch.Tensor) -> torch.Tensor:
        """Beta-mixture parameters ``(B, 6, C, 3)``: mixture logit, raw alpha, raw beta."""
        return self.lattice_head(h).view(-1, N_LATTICE_COORDS, self.n_components, 3)


def _one_hot_sum(layer: nn.Linear, values: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``layer`` applied to the one-hot code of ``values`` ``(B, F)`` -> ``(B, H)``: per column ``f``, 1..sizes[f]
    (0 and below: all zero; above: sizes[f]), the codes of all columns side by side.

    Computed as the sum of the weight columns the set entries select (an embedding bag), never
    building the one-hot matrix: most entries are zero (the Wyckoff features of 20 of the 21
    scored steps), and a training step took 21% less time than with the dense product.
    """
    offsets = sizes.cumsum(0) - sizes
    present = values > 0
    index = (offsets + torch.minimum(values, sizes) - 1)[present]
    bags = present.sum(dim=1).cumsum(0) - present.sum(dim=1)
    return nn.functional.embedding_bag(index, layer.weight.t(), bags, mode="sum")


def _one_hot_projection(n_features: int, hidden_dim: int) -> nn.Linear:
    """A linear map of one-hot features without bias, so that absent features (all zero) add nothing;
    initialised like an embedding table of scale ``ONE_HOT_INIT_STD``."""
    layer = nn.Linear(n_features, hidden_dim, bias=False)
    nn.init.normal_(layer.weight, 0.0, ONE_HOT_INIT_STD)
    return layer


def _unset_last(index: torch.Tensor, n: int) -> torch.Tensor:
    """Map -1 (unset) to ``n``, the embedding row reserved for it."""
    return torch.where(index < 0, n, index)


def _bernstein_log_concentrations(n_components: int) -> torch.Tensor:
    """``(C, 2)`` raw (log) concentrations of Beta(k, C + 1 - k), k = 1..C: equal weights make them uniform."""
    k = torch.arange(1, n_components + 1, dtype=torch.float32)
    return torch.stack([k, n_components + 1 - k], dim=1).log()


def _concentrations(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Beta concentrations ``exp(raw)`` within [MIN, MAX]; a raw 0 gives 1 (uniform).

    The exponential moves a peak's width by a constant factor per unit of raw output, so
    sharp peaks (concentrations of tens) are reached in few optimiser steps.
    """
    conc = params[..., 1:].clamp(math.log(MIN_CONCENTRATION), math.log(MAX_CONCENTRATION)).exp()
    return conc[..., 0], conc[..., 1]


def beta_mixture_log_prob(params: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Log density of a Beta mixture: params ``(B, D, C, 3)``, unit ``(B, D)`` -> ``(B, D)``."""
    alpha, beta = _concentrations(params)
    u = unit.clamp(UNIT_EPS, 1.0 - UNIT_EPS).unsqueeze(-1).to(alpha.dtype)
    component = Beta(alpha, beta).log_prob(u)  # (B, D, C)
    return torch.logsumexp(torch.log_softmax(params[..., 0], dim=-1) + component, dim=-1)


def sample_beta_mixture(params: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Draw ``(B, D)`` values in (0, 1); the temperature flattens the mixture weights only."""
    alpha, beta = _concentrations(params)
    pick = Categorical(logits=params[..., 0] / temperature).sample().unsqueeze(-1)  # (B, D, 1)
    draw = Beta(alpha.gather(-1, pick).squeeze(-1), beta.gather(-1, pick).squeeze(-1)).sample()
    return draw.clamp(UNIT_EPS, 1.0 - UNIT_EPS)
