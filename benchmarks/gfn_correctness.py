"""Crystal-GFN correctness: sampled frequencies against reward-proportional probabilities.

A restricted space whose discrete part (space group x composition x Wyckoff assignment)
is small enough to enumerate: Fe-O with at most 4 atoms per element, 12 space groups
covering all eight lattice systems (P-1 alone, with its eight fixed inversion centres,
would add 5,380 assignments), 602 discrete states. Each discrete state d gets a fixed random log reward
``1.5 * z_d`` (z standard normal, seed 0), independent of the lattice. After training,
crystals are drawn and their state frequencies compared with the target
``R(d) V(d) / sum R V`` (V: lattice volume of d, ``benchmarks._gfn_targets``): the
correlation of log frequency with log target and the L1 distance. The untrained
generator is measured the same way for reference.

    python -m benchmarks.gfn_correctness [--steps 2000] [--samples 100000] [--set gfn.KEY=VALUE ...]

``--set`` overrides ``gfn`` settings (training only; the space and the target stay fixed).

Prints the table and writes ``benchmarks/results/gfn_correctness.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from aloop.config import load_config
from aloop.gfn import CrystalEnv, build_policy, sample, train
from aloop.space.space import CrystalSpace
from benchmarks._gfn_targets import discrete_states

OVERRIDES = ["space.elements=[Fe, O]", "space.max_atoms_per_element=4",
             "space.space_groups=[1, 5, 14, 62, 75, 146, 148, 147, 164, 173, 221, 225]"]
LOG_REWARD_SCALE = 1.5
RESULTS = Path(__file__).resolve().parent / "results" / "gfn_correctness.md"


def _state_index(keys: torch.Tensor, batch_keys: torch.Tensor) -> torch.Tensor:
    """Row of ``keys`` ``(D, K)`` equal to each row of ``batch_keys`` ``(N, K)`` (every row is one of them)."""
    _, inverse = torch.unique(torch.cat([keys, batch_keys]), dim=0, return_inverse=True)
    row = torch.empty(int(inverse.max()) + 1, dtype=torch.long)
    row[inverse[: len(keys)]] = torch.arange(len(keys))
    return row[inverse[len(keys):]]


def _compare(frequency: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    seen = frequency > 0
    log_f, log_t = frequency[seen].log(), target[seen].log()
    correlation = torch.corrcoef(torch.stack([log_f, log_t]))[0, 1]
    return {"states_seen": f"{int(seen.sum())}/{len(target)}", "corr_log": float(correlation),
            "L1": float((frequency - target).abs().sum()), "max_abs": float((frequency - target).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--set", action="append", default=[], metavar="gfn.KEY=VALUE",
                        help="override a gfn setting, e.g. --set gfn.lr=0.01 (repeatable)")
    args = parser.parse_args()
    if bad := [text for text in args.set if not text.startswith("gfn.")]:
        parser.error(f"--set takes gfn settings only, got {bad}")
    config = load_config(None, OVERRIDES + args.set)
    env = CrystalEnv.from_space(CrystalSpace.from_settings(config.space), config.gfn, device=config.gfn.device)
    tables = env.to("cpu")  # the exact target is computed on CPU; the generator trains and samples on gfn.device
    group, composition, sites, volume = discrete_states(tables)
    log_reward_table = LOG_REWARD_SCALE * torch.randn(len(group), generator=torch.Generator().manual_seed(0))
    target = torch.softmax(log_reward_table + volume.log().float(), dim=0)
    keys = torch.cat([group.unsqueeze(1), composition.unsqueeze(1), sites.flatten(1)], dim=1)

    def pair_index(batch) -> torch.Tensor:
        batch = batch.to("cpu")
        trajectories, _ = tables.from_batch(batch)
        batch_keys = torch.cat([trajectories.group.unsqueeze(1), tables.trie.composition_index(batch.counts).unsqueeze(1),
                                trajectories.sites.flatten(1)], dim=1)
        return _state_index(keys, batch_keys)

    def log_reward(batch) -> torch.Tensor:
        return log_reward_table[pair_index(batch)]

    def frequencies(policy) -> torch.Tensor:
        batch = sample(env, policy, args.samples, seed=1, threads=config.gfn.threads)
        return torch.bincount(pair_index(batch), minlength=len(group)).double() / args.samples

    torch.manual_seed(0)
    policy = build_policy(env, config.gfn)
    rows = [{"generator": "untrained", **_compare(frequencies(policy), target.double()), "train_s": 0.0}]
    history = train(env, policy, log_reward, steps=args.steps, settings=config.gfn)
    rows.append({"generator": f"trained {args.steps} steps", **_compare(frequencies(policy), target.double()),
                 "train_s": history.seconds})
    log_z_target = float(torch.logsumexp(log_reward_table + volume.log().float(), dim=0))
    lines = [f"Command: `python -m benchmarks.gfn_correctness {' '.join(sys.argv[1:])}`", "",
             (f"Space: {env.describe()}; {len(group)} (group, composition, Wyckoff assignment) states. "
             f"`gfn` settings: {'defaults' if not args.set else 'defaults with ' + ', '.join(args.set)} "
             f"(batch {config.gfn.batch_size}, lr {config.gfn.lr}, {config.gfn.lr_schedule} schedule, "
             f"training temperature {config.gfn.temperature}, epsilon {config.gfn.epsilon}); "
             f"{args.samples} samples per generator. Learned log Z "
             f"{history.log_z[-1]:.3f}, exact log Z {log_z_target:.3f}. "
             f"`gfn.threads` = {config.gfn.threads}, load average {os.getloadavg()[0]:.1f} (shared machine)."), "",
             "| generator | states seen | corr(log freq, log target) | L1 | max abs diff | train s |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['generator']} | {row['states_seen']} | {row['corr_log']:.4f} | {row['L1']:.4f} | "
                     f"{row['max_abs']:.4f} | {row['train_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
