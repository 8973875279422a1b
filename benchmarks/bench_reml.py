"""Benchmark: the pathway analysis' random-intercept REML, profiled, against statsmodels' MixedLM.

Run from the project root::

    .venv/bin/python benchmarks/bench_reml.py                  # 8, 16, 32, 66 subjects
    .venv/bin/python benchmarks/bench_reml.py --subjects 8 66 --models 40

The group level fits one crossover model per node, pathway, index and PPI/correlation
edge: hundreds of small REML fits (395 in the 8-subject demo trial). Each is timed
both ways on the same Williams-crossover tables (3 periods, sum-coded period columns,
every fourth table with a drop-out): :func:`fmri_pain.pathways.reml.random_intercept_reml`
and ``MixedLM(...).fit(reml=True)`` (statsmodels' default optimisers). The script
prints the milliseconds per model, the ratio, and how far statsmodels' optimum is
from the profiled one: the REML criterion at statsmodels' estimates minus ours (>= 0:
the profiled optimum is never worse) and the largest fixed-effect difference.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmri_pain.pathways.reml import random_intercept_reml  # noqa: E402


def crossover_table(n: int, rng: np.random.Generator, dropout: bool):
    """Design, response and subjects of a 3-period Williams crossover (6 sequences)."""
    sequences = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2), (2, 1, 0)]
    rows = [(s, c, p) for s in range(n) for p, c in enumerate(sequences[s % 6])]
    if dropout:
        rows = rows[:-1]
    subject, condition, period = (np.array(v) for v in zip(*rows))
    x = np.column_stack([(condition == c).astype(float) for c in range(3)]
                        + [(period == p).astype(float) - (period == 2) for p in range(2)])
    y = (x @ np.array([0.5, 0.3, 0.7, 0.2, 0.0]) + rng.normal(0, 1.0, n)[subject]
         + rng.normal(0, 0.6, len(rows)))
    return x, y, subject


def reml_criterion(y, x, groups, group_var, resid_var) -> float:
    z = (groups[:, None] == np.unique(groups)[None]).astype(float)
    v = group_var * z @ z.T + resid_var * np.eye(len(y))
    vinv = np.linalg.inv(v)
    xvx = x.T @ vinv @ x
    r = y - x @ np.linalg.solve(xvx, x.T @ vinv @ y)
    return float(np.linalg.slogdet(v)[1] + np.linalg.slogdet(xvx)[1] + r @ vinv @ r)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[8, 16, 32, 66])
    parser.add_argument("--models", type=int, default=60, help="tables per sample size")
    args = parser.parse_args(argv)
    from statsmodels.regression.mixed_linear_model import MixedLM

    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"{'subjects':>8} {'MixedLM ms':>11} {'profiled ms':>12} {'ratio':>7} "
          f"{'criterion gap max':>18} {'|d params| max':>15}")
    for n in args.subjects:
        rng = np.random.default_rng(n)
        tables = [crossover_table(n, rng, dropout=i % 4 == 3) for i in range(args.models)]
        t_sm = t_ours = 0.0
        gaps, diffs = [], []
        for x, y, groups in tables:
            t0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sm = MixedLM(y, x, groups=groups).fit(reml=True)
            t1 = time.process_time()
            ours = random_intercept_reml(y, x, groups)
            t2 = time.process_time()
            t_sm += t1 - t0
            t_ours += t2 - t1
            gaps.append(reml_criterion(y, x, groups, float(np.asarray(sm.cov_re)[0, 0]), sm.scale)
                        - reml_criterion(y, x, groups, ours.group_var, ours.resid_var))
            diffs.append(float(np.abs(np.asarray(sm.fe_params) - ours.params).max()))
        k = len(tables)
        print(f"{n:>8} {1e3 * t_sm / k:>11.1f} {1e3 * t_ours / k:>12.2f} {t_sm / t_ours:>6.0f}x "
              f"{max(gaps):>18.2e} {max(diffs):>15.2e}", flush=True)
        if min(gaps) < -1e-8:
            print(f"  statsmodels found a better optimum on {sum(g < -1e-8 for g in gaps)} tables")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
