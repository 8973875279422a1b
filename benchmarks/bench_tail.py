"""Benchmark: tail acceleration (500 permutations + GPD tail) against 10,000 plain permutations.

Run from the project root::

    .venv/bin/python benchmarks/bench_tail.py            # pain21 max-t and the random null (a few minutes)
    .venv/bin/python benchmarks/bench_tail.py --tfce     # also pain21 TFCE (about 10 min at 10,000)

pain21: the 21 real maps, one-sample max-t (and TFCE, 26-connectivity), the
reference being 10,000 sign flips; 500 sign flips with ``accel="tail"`` and
without are drawn with several seeds. Printed per seed: the 5 % FWE threshold
relative to the reference, and the largest ``|log10 p|`` difference from the
reference over voxels whose reference FWE p lies in (1e-2, 1], (1e-3, 1e-2]
and (1e-4, 1e-3] (p > 1e-4: what 10,000 permutations resolve). The random
null (no simulator): the maximum of 1000 independent normals, whose p-values
are known exactly; 500 draws + tail against them, over 200 repetitions.
Goals (issue 17.2): threshold within 1 %, log10 p within 0.1 where p > 1e-4.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_inference import load, pain21_dataset  # noqa: E402

from fmri_pain.glm.inference import tail  # noqa: E402
from fmri_pain.glm.inference.permutation import permutation_test  # noqa: E402
from fmri_pain.glm.inference.result import fwe_threshold  # noqa: E402

BANDS = ((1e-2, 1.0), (1e-3, 1e-2), (1e-4, 1e-3))


def pain21():
    with tempfile.TemporaryDirectory() as tmp:
        _, paths, mask_img = pain21_dataset(Path(tmp))
        _, Y = load(paths, mask_img)
    return np.asarray(Y, dtype=np.float64), np.asarray(mask_img.dataobj) > 0


def compare(kind, ref_p, ref_thr, res, label):
    p = {"stat": res.p_fwe, "tfce": res.p_tfce_fwe}[kind]
    parts = [f"{label:5s} threshold {res.threshold(0.05, kind) / ref_thr - 1:+7.2%}"]
    for lo, hi in BANDS:
        sel = (ref_p > lo) & (ref_p <= hi)
        d = np.abs(np.log10(p[sel] / ref_p[sel])).max() if sel.any() else np.nan
        parts.append(f"({lo:g},{hi:g}] {d:5.2f}")
    return "  ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tfce", action="store_true", help="also TFCE (26-connectivity)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)
    Y, mask = pain21()
    x = np.ones((Y.shape[0], 1))
    kinds = ["stat"] + (["tfce"] if args.tfce else [])
    for kind in kinds:
        kw = dict(mask=mask, tfce=kind == "tfce", n_jobs=args.n_jobs)
        t0 = time.perf_counter()
        big = permutation_test(Y, x, [1.0], n_perm=10_000, random_state=123, **kw)
        ref_p = {"stat": big.p_fwe, "tfce": big.p_tfce_fwe}[kind]
        ref_thr = big.threshold(0.05, kind)
        print(f"\n== pain21 {'max-t' if kind == 'stat' else 'TFCE'}: 10,000 permutations in "
              f"{time.perf_counter() - t0:.1f} s, 5 % threshold {ref_thr:.4f}; max |log10 p| "
              "difference by band of the reference p")
        for seed in range(args.seeds):
            fast = permutation_test(Y, x, [1.0], n_perm=500, random_state=seed, accel="tail", **kw)
            plain = permutation_test(Y, x, [1.0], n_perm=500, random_state=seed, **kw)
            fit = fast.tail_fits[kind]
            print(f"seed {seed}: " + compare(kind, ref_p, ref_thr, fast, "tail") + "\n        "
                  + compare(kind, ref_p, ref_thr, plain, "plain") + "\n        fit: "
                  + ("none" if fit is None else
                     f"Q {fit.quantile:.3f}, shape {fit.shape:+.3f}, AD p {fit.ad_p:.2f}"))

    m, n_rep = 1000, 200
    rng = np.random.default_rng(0)
    ps = np.array([0.05, 1e-2, 1e-3, 1e-4])
    xs = stats.norm.ppf((1 - ps) ** (1 / m))
    err, thr_tail, thr_plain, n_fail = [], [], [], 0
    for _ in range(n_rep):
        null = rng.standard_normal((500, m)).max(axis=1)
        fit = tail.fit_tail(null)
        if fit is None:
            n_fail += 1
            continue
        p = tail.tail_p(xs, fit, np.ones(ps.size))
        err.append(np.abs(np.log10(p / ps)))
        thr_tail.append(abs(fit.critical_value(0.05) / xs[0] - 1))
        thr_plain.append(abs(fwe_threshold(null, 0.05) / xs[0] - 1))
    err = np.array(err)
    print(f"\n== random null: max of {m} normals, 500 draws + tail vs the exact p, {n_rep} "
          f"repetitions ({n_fail} without a fit)")
    for j, p in enumerate(ps):
        print(f"p {p:g}: |log10 p error| median {np.median(err[:, j]):.2f}, 90th percentile "
              f"{np.percentile(err[:, j], 90):.2f} (p = smallest double where the fitted tail "
              "ends before it)")
    print(f"5 % threshold |relative error|: tail median {np.median(thr_tail):.2%} (90th "
          f"percentile {np.percentile(thr_tail, 90):.2%}), 500 plain permutations median "
          f"{np.median(thr_plain):.2%}")


if __name__ == "__main__":
    main()
