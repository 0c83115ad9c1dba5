"""The composition prefix tables against brute force on small hand-made and random tables."""

import itertools

import pytest
import torch

from aloop.gfn.trie import CompositionTrie


def _random_table(seed: int, *, n_elements: int = 3, max_count: int = 3, n_groups: int = 5):
    generator = torch.Generator().manual_seed(seed)
    every = torch.tensor(list(itertools.product(range(max_count + 1), repeat=n_elements)))[1:]
    keep = torch.rand(len(every), generator=generator) < 0.5
    compositions = every[keep]
    compatible = torch.rand(n_groups, len(compositions), generator=generator) < 0.3
    compatible[torch.arange(n_groups), torch.randint(len(compositions), (n_groups,), generator=generator)] = True
    compatible[1] = compatible[0]  # two groups with one compatibility row share a class
    return compositions, compatible


def _brute_force_allowed(compositions, compatible, group, prefix):
    k = len(prefix)
    return {int(c[k]) for c, ok in zip(compositions, compatible[group])
            if ok and tuple(c[:k].tolist()) == tuple(prefix)}


def test_hand_made_table():
    # Two elements; group 0 hosts only (1, 1), group 1 hosts (1, 1) and (2, 0).
    compositions = torch.tensor([[1, 1], [2, 0]])
    trie = CompositionTrie.build(compositions, torch.tensor([[True, False], [True, True]]))
    root = torch.zeros(2, dtype=torch.long)
    assert trie.count_mask(0, root, torch.tensor([0, 1])).tolist() == [[False, True, False], [False, True, True]]
    node = trie.step(0, root, torch.tensor([2, 2]))
    assert trie.count_mask(1, node, torch.tensor([1, 1])).tolist() == [[True, False, False]] * 2
    assert trie.composition_index(torch.tensor([[2, 0], [1, 1], [0, 2], [1, 5]])).tolist() == [1, 0, -1, -1]


@pytest.mark.parametrize("seed", range(3))
def test_masks_match_brute_force_for_every_prefix_and_group(seed):
    compositions, compatible = _random_table(seed)
    trie = CompositionTrie.build(compositions, compatible)
    n_groups, n_elements = compatible.shape[0], compositions.shape[1]
    for k in range(n_elements):
        for prefix in itertools.product(range(4), repeat=k):
            node = trie.path(torch.tensor([list(prefix) + [0] * (n_elements - k)]))[0, k]
            for group in range(n_groups):
                expected = _brute_force_allowed(compositions, compatible, group, prefix)
                if node < 0:
                    assert not expected
                    continue
                mask = trie.count_mask(k, node.view(1), torch.tensor([group]))[0]
                assert set(mask.nonzero().flatten().tolist()) == expected


def test_random_walks_never_dead_end_and_end_in_hosted_compositions():
    compositions, compatible = _random_table(7, n_groups=6)
    trie = CompositionTrie.build(compositions, compatible)
    torch.manual_seed(0)
    group = torch.randint(compatible.shape[0], (20_000,))
    node = torch.zeros_like(group)
    for level in range(compositions.shape[1]):
        mask = trie.count_mask(level, node, group)
        assert mask.any(dim=1).all()
        node = trie.step(level, node, torch.multinomial(mask.float(), 1).squeeze(1))
    composition = trie.leaf_composition[node]
    assert compatible[group, composition].all()
    # every hosted pair is reachable (each has probability >= 1/64 per walk of its group)
    reached = torch.zeros_like(compatible)
    reached[group, composition] = True
    assert torch.equal(reached, compatible)


def test_groups_with_equal_rows_share_a_class_and_ids_round_trip():
    compositions, compatible = _random_table(3)
    trie = CompositionTrie.build(compositions, compatible)
    assert trie.group_class[0] == trie.group_class[1]
    assert trie.patterns[-1].shape[0] == len(torch.unique(compatible, dim=0))
    assert torch.equal(trie.composition_index(compositions), torch.arange(len(compositions)))
