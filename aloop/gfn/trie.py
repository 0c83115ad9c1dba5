"""Prefix tree over compositions, built element by element, with per-group feasibility.

The composition stage chooses the count of element 1, then element 2, ... A prefix
(counts of the first ``k`` elements) is a node at level ``k``; a count is allowed only if
the child prefix still leads to at least one composition the chosen space group can host,
so a trajectory never reaches a dead end.

Memory stays small for tens of thousands of compositions: space groups with identical
compatibility rows share one *class*, and at each level the feasibility columns
``(n_classes,)`` of all nodes are deduplicated into a few *patterns*. For the default
space (17 elements, 16,794 compositions) the trie has about 10^5 nodes.

Example:
    >>> counts = torch.tensor([[1, 1], [2, 0]])
    >>> trie = CompositionTrie.build(counts, torch.tensor([[True, False], [True, True]]))
    >>> trie.count_mask(0, torch.tensor([0]), torch.tensor([0])).tolist()
    [[False, True, False]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class CompositionTrie:
    """Prefix tables of the composition stage.

    Node ids at each level follow the lexicographic order of their prefixes, so the
    children of a node are consecutive ids, ordered by count: a child is found from the
    node's first child and the rank of the count among the counts that have a child.

    Attributes:
        has_child: per level ``k`` in ``0..E-1``, ``(N_k, K+1)`` bool: some composition
            has the node's prefix followed by count ``c`` for element ``k``.
        first_child: per level ``k`` in ``0..E-1``, ``(N_k,)`` int32: id at level ``k+1``
            of the node's first child.
        pattern_of: per level ``k`` in ``0..E``, ``(N_k,)`` int32: feasibility pattern of each node.
        patterns: per level ``k``, ``(C, P_k)`` bool: a node with pattern ``p`` has a
            completion that a space group of compatibility class ``c`` hosts.
        group_class: ``(G,)`` long, the compatibility class of each space group.
        leaf_composition: ``(M,)`` long, the row of ``compositions`` at each leaf.
    """

    has_child: tuple[Tensor, ...]
    first_child: tuple[Tensor, ...]
    pattern_of: tuple[Tensor, ...]
    patterns: tuple[Tensor, ...]
    group_class: Tensor
    leaf_composition: Tensor

    @property
    def n_elements(self) -> int:
        return len(self.has_child)

    @property
    def max_count(self) -> int:
        """Largest count of one element (K); count actions are ``0..K``."""
        return int(self.has_child[0].shape[1]) - 1

    @classmethod
    def build(cls, compositions: Tensor, compatible: Tensor) -> CompositionTrie:
        """Build the tables from the space's composition list and compatibility matrix (CPU).

        Args:
            compositions: ``(M, E)`` long, distinct count vectors.
            compatible: ``(G, M)`` bool, space group ``g`` can host composition ``m``.
        """
        n_comp, n_elements = compositions.shape
        if compatible.shape[1] != n_comp:
            raise ValueError(f"compatible has {compatible.shape[1]} columns, expected {n_comp} (one per composition)")
        first_group, group_class = _unique_rows(compatible)
        class_rows = compatible[first_group].to(torch.float32)  # (C, M)
        width = int(compositions.max()) + 1
        node_of = _prefix_ids(compositions)
        has_child, first_child, pattern_of, patterns = [], [], [], []
        for k in range(n_elements + 1):
            n_nodes = int(node_of[k].max()) + 1
            hits = torch.zeros(n_nodes, class_rows.shape[0]).index_add_(0, node_of[k], class_rows.T) > 0  # (N_k, C)
            first_node, level_pattern_of = _unique_rows(hits)
            patterns.append(hits[first_node].T.contiguous())
            pattern_of.append(level_pattern_of.to(torch.int32))
            if k < n_elements:
                exists = torch.zeros(n_nodes, width, dtype=torch.bool)
                exists[node_of[k], compositions[:, k]] = True
                has_child.append(exists)
                first = torch.full((n_nodes,), n_comp, dtype=torch.long)
                first_child.append(first.scatter_reduce(0, node_of[k], node_of[k + 1], reduce="amin").to(torch.int32))
        leaf_composition = torch.empty(n_comp, dtype=torch.long)
        leaf_composition[node_of[-1]] = torch.arange(n_comp)
        return cls(tuple(has_child), tuple(first_child), tuple(pattern_of), tuple(patterns), group_class,
                   leaf_composition)

    def to(self, device: torch.device | str) -> CompositionTrie:
        return CompositionTrie(*(
            tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device)
            for value in (self.has_child, self.first_child, self.pattern_of, self.patterns, self.group_class,
                          self.leaf_composition)
        ))

    def children(self, level: int, node: Tensor) -> Tensor:
        """Child of each ``(B,)`` node for every count -> ``(B, K+1)`` long, -1 where none."""
        exists = self.has_child[level][node]  # (B, K+1)
        rank = exists.cumsum(dim=1) - exists.long()
        child = self.first_child[level][node].long().unsqueeze(1) + rank
        return torch.where(exists, child, -1)

    def count_mask(self, level: int, node: Tensor, group: Tensor) -> Tensor:
        """Allowed counts for element ``level``: ``(B,)`` nodes and groups -> ``(B, K+1)`` bool."""
        children = self.children(level, node)
        pattern = self.pattern_of[level + 1][children.clamp(min=0)].long()
        feasible = self.patterns[level + 1][self.group_class[group].unsqueeze(1), pattern]
        return (children >= 0) & feasible

    def count_masks(self, counts: Tensor, group: Tensor) -> Tensor:
        """Allowed counts at every element's step of whole count vectors ``(B, E)`` -> ``(B, E, K+1)`` bool."""
        nodes = self.path(counts)
        return torch.stack([self.count_mask(k, nodes[:, k].clamp(min=0), group) for k in range(self.n_elements)],
                           dim=1)

    def step(self, level: int, node: Tensor, count: Tensor) -> Tensor:
        """Child node after choosing ``count`` ``(B,)`` at ``level``; -1 off the tree."""
        return self.children(level, node).gather(1, count.unsqueeze(1)).squeeze(1)

    def path(self, counts: Tensor) -> Tensor:
        """Nodes visited by whole count vectors ``(B, E)`` -> ``(B, E+1)`` long, -1 once off the tree.

        A count above ``K`` leaves the tree too, so any ``(B, E)`` input is safe.
        """
        nodes = torch.zeros(counts.shape[0], self.n_elements + 1, dtype=torch.long, device=counts.device)
        for level in range(self.n_elements):
            here, count = nodes[:, level], counts[:, level]
            inside = (here >= 0) & (count >= 0) & (count <= self.max_count)
            nxt = self.step(level, here.clamp(min=0), count.clamp(0, self.max_count))
            nodes[:, level + 1] = torch.where(inside, nxt, -1)
        return nodes

    def composition_index(self, counts: Tensor) -> Tensor:
        """Row of ``compositions`` for each count vector ``(B, E)`` -> ``(B,)``; -1 if not in the space."""
        leaf = self.path(counts)[:, -1]
        return torch.where(leaf >= 0, self.leaf_composition[leaf.clamp(min=0)], -1)

    def nbytes(self) -> int:
        """Memory held by the tables, in bytes."""
        tensors = (*self.has_child, *self.first_child, *self.pattern_of, *self.patterns, self.group_class,
                   self.leaf_composition)
        return sum(t.numel() * t.element_size() for t in tensors)


def _unique_rows(bits: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of a ``(R, W)`` bool matrix: ``(U,)`` first row of each, ``(R,)`` inverse.

    Rows are bit-packed (numpy ``packbits``) before ``np.unique``: far faster than
    ``torch.unique(dim=0)`` on wide boolean rows.
    """
    packed = np.packbits(bits.numpy(), axis=1)
    if packed.shape[1] <= 8:  # one 64-bit key per row: a plain 1-D unique
        packed = np.pad(packed, ((0, 0), (0, 8 - packed.shape[1]))).view(np.uint64).reshape(-1)
    _, first, inverse = np.unique(packed, axis=0 if packed.ndim == 2 else None, return_index=True,
                                  return_inverse=True)
    return torch.from_numpy(first).long(), torch.from_numpy(inverse.reshape(-1)).long()


def _prefix_ids(compositions: Tensor) -> list[Tensor]:
    """Node id of each composition's prefix at every level: ``E+1`` tensors of shape ``(M,)``.

    One lexicographic sort (``np.lexsort``, first column primary) replaces ``E`` calls of
    ``torch.unique(dim=0)``: in sorted order a new prefix of length ``k`` starts where the
    first differing column with the previous row is below ``k``.
    """
    n_comp, n_elements = compositions.shape
    order = torch.from_numpy(np.lexsort(compositions.numpy().T[::-1])).long()
    ordered = compositions[order]
    differs = ordered[1:] != ordered[:-1]  # (M-1, E)
    if not differs.any(dim=1).all():
        raise ValueError("compositions contains duplicate rows")
    first_diff = differs.to(torch.int8).argmax(dim=1)  # (M-1,)
    node_of = []
    for k in range(n_elements + 1):
        starts = torch.cat([torch.zeros(1, dtype=torch.long), (first_diff < k).long()])
        ids = torch.empty(n_comp, dtype=torch.long)
        ids[order] = starts.cumsum(0)
        node_of.append(ids)
    return node_of
