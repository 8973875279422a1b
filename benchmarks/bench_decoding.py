"""Benchmark: the decoding permutation test, factorised against scikit-learn's.

Run from the project root::

    .venv/bin/python benchmarks/bench_decoding.py                 # 8, 16, 32 subjects
    .venv/bin/python benchmarks/bench_decoding.py --subjects 8 16

The pathway analysis decodes the condition from subject x session maps with
``StandardScaler`` + ``RidgeClassifier`` cross-validated leave-one-subject-out,
tested against 100 within-subject label permutations. scikit-learn's
``permutation_test_score`` refits every fold for every permutation (folds x
permutations fits, each growing with the subjects: the cost grows as n^2-n^3).
:func:`fmri_pain.pathways.decoding.decode` factorises each fold once. Both run on
the same random maps (3 conditions per subject) in one process; the script
prints wall and CPU seconds, the CPU ratio and whether accuracy and p value are
equal.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmri_pain.pathways.decoding import decode  # noqa: E402


def timed(fn, *args, **kw):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--features", type=int, default=5000)
    parser.add_argument("--n-perm", type=int, default=100)
    args = parser.parse_args(argv)
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import LeaveOneGroupOut, permutation_test_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    decode(np.random.default_rng(0).standard_normal((9, 10)), np.tile(list("abc"), 3),
           np.repeat(list("123"), 3), n_permutations=2)  # warm-up (imports)
    for n in args.subjects:
        rng = np.random.default_rng(n)
        groups = np.repeat(np.arange(n).astype(str), 3)
        y = np.tile(np.array(["DRGS", "DUAL", "SCS"]), n)
        X = rng.standard_normal((3 * n, args.features)).astype(np.float32)
        ours, w_new, c_new = timed(decode, X, y, groups, n_permutations=args.n_perm)
        model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
        (score, _, p), w_old, c_old = timed(
            permutation_test_score, model, X, y, groups=groups, cv=LeaveOneGroupOut(),
            n_permutations=args.n_perm, random_state=0, scoring="accuracy")
        print(f"{n} subjects, {args.features} features, {args.n_perm} permutations: "
              f"scikit-learn {w_old:.2f} s wall / {c_old:.2f} s CPU, factorised {w_new:.3f} / "
              f"{c_new:.3f} s: x{c_old / c_new:.0f} CPU; accuracy equal "
              f"{score == ours['accuracy']}, p equal {p == ours['p_perm']}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
