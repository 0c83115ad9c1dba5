"""Crystal-GFN training: time to converge on a synthetic reward that favours a known region.

Default space (17 elements, 227 groups, about 5 million (group, composition) pairs) and
default ``gfn`` settings. Region: cubic space group, oxygen in the composition and
5 <= a <= 7 A; log reward 0 inside, ``-KAPPA`` outside. Trajectory balance samples the
region with probability ``p* = m_in / (m_in + exp(-KAPPA) m_out)`` and learns
``log Z* = log(m_in + exp(-KAPPA) m_out)``, with m the measure of each part: every
(group, composition, Wyckoff assignment) with its lattice volume, estimated by importance
sampling from the uniform policy (too many assignments to enumerate).

Protocol: one ``train`` call, stopped after ``--budget-s`` seconds of training time
(evaluations excluded); every ``--every`` steps 2,000 crystals are sampled (fixed seed)
and the region share measured. Converged at the first evaluation from which on, to the
end of the budget, the mean region share of the last ``WINDOW`` evaluations stays within
``TOLERANCE`` of p*, provided the TB loss has plateaued there: its mean over the last
``WINDOW * every`` steps is less than ``PLATEAU`` below its mean over the ``WINDOW * every``
steps before.

    python -m benchmarks.gfn_training [--budget-s 300] [--every 100]

Prints the curve and writes ``benchmarks/results/gfn_training.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, GFNSettings, load_config
from aloop.gfn import CrystalEnv, build_policy, sample, train
from aloop.gfn.sampler import log_prob, rollout
from aloop.space.crystal import CrystalBatch
from aloop.space.space import CrystalSpace

KAPPA = 8.0
A_WINDOW = (5.0, 7.0)
TOLERANCE = 0.03
WINDOW = 5
PLATEAU = 0.1
EVAL_SAMPLES = 2000
TARGET_SAMPLES = 200_000
CUBIC = CRYSTAL_LATTICE_SYSTEMS.index("cubic")
RESULTS = Path(__file__).resolve().parent / "results" / "gfn_training.md"


@dataclass(frozen=True)
class Evaluation:
    """One point of the training curve."""

    step: int
    train_s: float
    share: float
    rolling_share: float
    loss: float
    loss_drop: float
    """Relative drop of the mean loss over the last window against the window before (nan early on)."""
    log_z: float


def _in_region(batch: CrystalBatch, env: CrystalEnv) -> torch.Tensor:
    a = batch.lattice[:, 0]
    return ((batch.space_group >= 195) & (batch.counts[:, env.space.elements.index("O")] > 0)
            & (a >= A_WINDOW[0]) & (a <= A_WINDOW[1]))


def _targets(env: CrystalEnv, settings: GFNSettings) -> tuple[float, float]:
    """p* and log Z* of the region reward, estimated by importance sampling with the uniform policy.

    The measure trajectory balance samples against counts every (group, composition, Wyckoff
    assignment) with its lattice volume; there are too many assignments in the default space to
    enumerate, so each mass is ``E_q[1[x in part] / q(x)]`` over ``TARGET_SAMPLES`` trajectories of
    the uniform policy q (its exact probability density, ``log_prob``).
    """
    uniform = build_policy(env, settings.model_copy(update={"wyckoff_prior_weight": 0.0}))
    weights, inside = [], []
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(11)
        for _ in range(TARGET_SAMPLES // 10_000):
            trajectories = rollout(env, uniform, 10_000)
            weights.append(torch.exp(-log_prob(env, uniform, trajectories).double()))
            inside.append(_in_region(env.to_batch(trajectories), env))
    weight, region = torch.cat(weights), torch.cat(inside)
    m_in, m_out = float((weight * region).mean()), float((weight * ~region).mean())
    z = m_in + math.exp(-KAPPA) * m_out
    return m_in / z, math.log(z)


def _converged_at(curve: list[Evaluation], p_star: float) -> Evaluation | None:
    """The first evaluation from which the rolling share stays close to p*, with the loss plateaued there."""
    close = [abs(e.rolling_share - p_star) <= TOLERANCE for e in curve]
    return next((e for i, e in enumerate(curve) if all(close[i:]) and e.loss_drop < PLATEAU), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=300.0, help="training wall time limit")
    parser.add_argument("--every", type=int, default=100, help="steps between evaluations")
    args = parser.parse_args()
    config = load_config()
    settings = config.gfn
    env = CrystalEnv.from_space(CrystalSpace.from_settings(config.space), settings, device=settings.device)
    p_star, log_z_star = _targets(env, settings)

    def log_reward(batch: CrystalBatch) -> torch.Tensor:
        return torch.where(_in_region(batch, env), 0.0, -KAPPA)

    torch.manual_seed(0)
    policy = build_policy(env, settings)
    losses: list[float] = []
    shares: list[float] = []
    curve: list[Evaluation] = []
    start, evaluating = time.perf_counter(), 0.0

    def evaluate(step: int, loss: float) -> bool:
        nonlocal evaluating
        losses.append(loss)
        if step % args.every:
            return False
        began = time.perf_counter()
        train_s = began - start - evaluating
        shares.append(float(_in_region(sample(env, policy, EVAL_SAMPLES, seed=7, threads=settings.threads),
                                       env).float().mean()))
        span = WINDOW * args.every
        recent, before = losses[-span:], losses[-2 * span:-span]
        drop = (1 - sum(recent) / sum(before)) if len(before) == span else float("nan")
        curve.append(Evaluation(step, train_s, shares[-1], sum(shares[-WINDOW:]) / len(shares[-WINDOW:]),
                                sum(losses[-args.every:]) / args.every, drop, float(policy.log_z.detach())))
        e = curve[-1]
        print(f"step {e.step:5d}  {e.train_s:6.1f} s  share {e.share:.3f} (rolling {e.rolling_share:.3f}, "
              f"p* {p_star:.3f})  loss {e.loss:.3f} (drop {e.loss_drop:+.2f})  log Z {e.log_z:.3f} "
              f"(log Z* {log_z_star:.3f})", flush=True)
        evaluating += time.perf_counter() - began
        return train_s >= args.budget_s

    train(env, policy, log_reward, steps=10**9, settings=settings, progress=False, callback=evaluate)
    done = _converged_at(curve, p_star)
    verdict = (f"converged at step {done.step} after {done.train_s:.0f} s of training" if done is not None
               else f"not converged within {args.budget_s:.0f} s")
    lines = [f"Command: `python -m benchmarks.gfn_training {' '.join(sys.argv[1:])}`", "",
             f"Default space ({env.describe()}); default `gfn` settings (batch {settings.batch_size}, hidden "
             f"{settings.hidden_dim}, {settings.n_beta_components} Beta components, lr {settings.lr}, log Z lr "
             f"{settings.lr_logz}, epsilon {settings.epsilon}, replay {settings.replay_fraction} of "
             f"{settings.replay_size}, `gfn.threads` = {settings.threads}). Shared 2-core machine, load average "
             f"{os.getloadavg()[0]:.1f} at the end. Region: cubic, O present, {A_WINDOW[0]} <= a <= {A_WINDOW[1]} A; "
             f"log reward 0 inside, -{KAPPA} outside. Target share p* = {p_star:.3f}, log Z* = {log_z_star:.3f}.", "",
             f"**{verdict}**. Criterion: from that evaluation to the end of the budget, the mean share of the last "
             f"{WINDOW} evaluations ({WINDOW * EVAL_SAMPLES} samples) stays within {TOLERANCE} of p*, and there "
             f"the mean TB loss of the last {WINDOW * args.every} steps is less than {PLATEAU:.0%} below that of "
             f"the {WINDOW * args.every} steps before (plateau).", "",
             "| step | train s | region share | rolling share | mean TB loss | loss drop | log Z |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {e.step} | {e.train_s:.0f} | {e.share:.3f} | {e.rolling_share:.3f} | {e.loss:.3f} | "
              f"{e.loss_drop:+.2f} | {e.log_z:.3f} |" for e in curve]
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
