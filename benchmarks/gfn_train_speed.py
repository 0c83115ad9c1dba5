"""Crystal-GFN training speed: seconds per training step on the default space.

Default space and ``gfn`` settings (``gfn.threads`` = 1), a fixed synthetic reward (log
reward 0 for cubic crystals with oxygen and 5 <= a <= 7 A, -8 elsewhere, as in
``benchmarks.gfn_training``) and seed 0. Each repeat builds a fresh policy and trains it
for ``--steps`` steps in one ``train`` call; the table gives seconds per step of each
repeat and the last step's loss and log Z (equal across repeats: same seed).

Scoring trajectories with the count and letter masks their rollout recorded, instead of
recomputing them, took 0.071 s to 0.065 s per step over 300 steps and 0.074 s to 0.066 s
over 1,000 (runs of both versions interleaved on the shared 2-core machine), with the
same loss and log Z curves bit for bit.

Three changes to the policy's arithmetic, none to its values (log-probabilities equal bit for
bit on 200 trajectories; the training curves differ by float summation order only): one-hot
codes summed as weight columns (an embedding bag) instead of a dense product, forced count
steps left out of the scored trunk rows (they add 0), and the Wyckoff stage's state input
encoded once per rollout. Over 300 steps, runs interleaved on an idle machine: 0.0728 and
0.0706 s per step before, 0.0495 and 0.0537 after (28% less).

    python -m benchmarks.gfn_train_speed [--steps 300] [--repeats 3]

Prints the table and writes ``benchmarks/results/gfn_train_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from aloop.config import load_config
from aloop.gfn import CrystalEnv, LogRewardFn, TrainingHistory, build_policy, train
from aloop.space.space import CrystalSpace
from benchmarks.gfn_training import KAPPA, _in_region

RESULTS = Path(__file__).resolve().parent / "results" / "gfn_train_speed.md"


def _log_reward(env: CrystalEnv) -> LogRewardFn:
    """Log reward 0 in ``benchmarks.gfn_training``'s region, ``-KAPPA`` elsewhere."""
    return lambda batch: torch.where(_in_region(batch, env), 0.0, -KAPPA)


def run(env: CrystalEnv, steps: int) -> TrainingHistory:
    """Train a fresh default policy for ``steps`` steps from seed 0 on the synthetic reward."""
    settings = load_config().gfn
    torch.manual_seed(0)
    policy = build_policy(env, settings)
    return train(env, policy, _log_reward(env), steps=steps, settings=settings, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="training runs, each from a fresh policy")
    args = parser.parse_args()
    config = load_config()
    env = CrystalEnv.from_space(CrystalSpace.from_settings(config.space), config.gfn, device=config.gfn.device)
    load_before = os.getloadavg()[0]
    rows = []
    for repeat in range(args.repeats):
        history = run(env, args.steps)
        rows.append(f"| {repeat} | {args.steps} | {history.seconds / args.steps:.4f} | {history.loss[-1]:.6f} | "
                    f"{history.log_z[-1]:.6f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        f"Command: `python -m benchmarks.gfn_train_speed {' '.join(sys.argv[1:])}`", "",
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, device {env.device}, `gfn.threads` = "
        f"{config.gfn.threads}, load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
        f"(the machine is shared). Default space and `gfn` settings (batch {config.gfn.batch_size}, replay "
        f"{config.gfn.replay_fraction} of {config.gfn.replay_size}); synthetic region reward (0 inside, -{KAPPA} "
        "outside); seed 0.", "",
        "| repeat | steps | s/step | last loss | last log Z |", "|---|---|---|---|---|", *rows]) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
