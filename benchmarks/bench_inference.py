"""Benchmark: fmri_pain permutation inference vs nilearn's non_parametric_inference.

Run from the project root::

    .venv/bin/python benchmarks/bench_inference.py            # full (about 20-30 min on 2 cores)
    .venv/bin/python benchmarks/bench_inference.py --quick    # fewer permutations, one dataset

Datasets: the 21 real pain maps of ../shared/data/pain21 (2 mm, voxels where
every map is non-zero) and 30 simulated smooth maps in nilearn's 2 mm MNI152
brain mask. Both engines get the same images, mask, n_perm, n_jobs and seed;
ours replays nilearn's random draws (``nilearn_rearrangements``) so the null
distributions, p maps and FWE thresholds must agree; the script checks it.

nilearn's TFCE costs seconds per permutation (one connected-component
labelling per height), so its TFCE time at n_perm is *extrapolated* linearly
from two short runs (``n_small`` and ``n_big`` permutations: fixed cost + cost
per permutation); this is stated in the output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmri_pain.glm.inference.permutation import permutation_test  # noqa: E402
from fmri_pain.glm.inference.rearrangements import nilearn_rearrangements  # noqa: E402
from fmri_pain.glm.inference.result import fwe_threshold  # noqa: E402

PAIN21 = ROOT / ".." / "shared" / "data" / "pain21"


def pain21_dataset(tmp: Path):
    mask_img = nib.load(PAIN21 / "mask.nii.gz")
    paths = [str(PAIN21 / f"contrast_pain_{i:02d}.nii.gz") for i in range(1, 22)]
    mask = np.asarray(mask_img.dataobj) > 0
    data = np.stack([np.asarray(nib.load(p).dataobj, dtype=np.float32)[mask] for p in paths])
    mask[mask] = np.all(data != 0, axis=0) & np.all(np.isfinite(data), axis=0)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine)
    return "pain21 (21 real maps)", paths, mask_img


def simulated_dataset(tmp: Path, n_maps: int = 30, seed: int = 0):
    from nilearn.datasets import load_mni152_brain_mask

    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) > 0
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine)
    rng = np.random.default_rng(seed)
    paths = []
    blob = np.zeros(mask.shape)
    blob[30:38, 50:58, 40:48] = 0.8
    for i in range(n_maps):
        vol = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
        vol = (vol / vol[mask].std() + blob) * mask
        path = tmp / f"sim_{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.float32), mask_img.affine), path)
        paths.append(str(path))
    return f"simulated ({n_maps} maps, 2 mm)", paths, mask_img


def run_nilearn(paths, mask_img, n_perm, n_jobs, seed, tfce=False):
    from nilearn.glm.second_level import non_parametric_inference

    design = pd.DataFrame({"intercept": np.ones(len(paths))})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = non_parametric_inference(paths, design_matrix=design, mask=mask_img, n_perm=n_perm,
                                       n_jobs=n_jobs, random_state=seed, tfce=tfce,
                                       two_sided_test=False)
    return time.perf_counter() - t0, out


def load(paths, mask_img):
    from nilearn.masking import apply_mask

    t0 = time.perf_counter()
    Y = apply_mask(paths, mask_img)
    return time.perf_counter() - t0, Y


def run_permuted_ols(Y, n_perm, n_jobs, seed):
    from nilearn.mass_univariate import permuted_ols

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = permuted_ols(np.ones((Y.shape[0], 1)), np.asarray(Y, dtype=np.float64), n_perm=n_perm,
                           n_jobs=n_jobs, random_state=seed, two_sided_test=False)
    return time.perf_counter() - t0, out


def run_ours(Y, mask_img, n_perm, n_jobs, seed, tfce=False, connectivity=6, nilearn_draws=True):
    t0 = time.perf_counter()
    mask = np.asarray(mask_img.dataobj) > 0
    perms = None
    if nilearn_draws:
        import joblib

        perms = nilearn_rearrangements(Y.shape[0], n_perm, intercept_test=True, random_state=seed,
                                       n_jobs=min(n_jobs, joblib.cpu_count()))
    res = permutation_test(Y, np.ones((Y.shape[0], 1)), [1.0], n_perm=n_perm, permutations=perms,
                           random_state=seed, mask=mask, tfce=tfce, connectivity=connectivity,
                           two_sided=False, n_jobs=n_jobs)
    return time.perf_counter() - t0, res


def run_ours_images(paths, mask_img, n_perm, n_jobs, seed, tfce=False, connectivity=6):
    """Images in, images out: our counterpart of non_parametric_inference."""
    import joblib

    from fmri_pain.glm.inference.maps import permutation_inference

    t0 = time.perf_counter()
    perms = nilearn_rearrangements(len(paths), n_perm, intercept_test=True, random_state=seed,
                                   n_jobs=min(n_jobs, joblib.cpu_count()))
    res, _ = permutation_inference(paths, np.ones((len(paths), 1)), [1.0], mask_img,
                                   permutations=perms, tfce=tfce, connectivity=connectivity,
                                   two_sided=False, n_jobs=n_jobs)
    return time.perf_counter() - t0, res


def masked(img, mask_img):
    return np.asarray(img.dataobj)[np.asarray(mask_img.dataobj) > 0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pain21 only, fewer permutations")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--n-perm", type=int, default=1000)
    parser.add_argument("--tfce-perms", type=int, nargs=2, default=(2, 10),
                        help="two short nilearn TFCE runs used for the linear extrapolation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tfce-10x", action="store_true",
                        help="also time our TFCE at 10 x n_perm (about 0.1-0.3 s per permutation)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_perm = min(args.n_perm, 200)
        args.tfce_perms = (1, 3)
    n_perm, n_jobs, seed = args.n_perm, args.n_jobs, args.seed
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets = [pain21_dataset(Path(tmp))]
        if not args.quick:
            datasets.append(simulated_dataset(Path(tmp)))
        for name, paths, mask_img in datasets:
            n_vox = int((np.asarray(mask_img.dataobj) > 0).sum())
            print(f"\n== {name}: {n_vox} voxels, n_perm={n_perm}, n_jobs={n_jobs}", flush=True)
            t_load, Y = load(paths, mask_img)
            print(f"loading + masking the maps (nilearn.masking.apply_mask, for the engine runs): "
                  f"{t_load:.2f} s", flush=True)
            run_ours(Y[:, :500], nib.Nifti1Image(np.pad(np.ones((5, 10, 10), np.uint8), 1), np.eye(4)),
                     2, 1, seed, tfce=True)  # compile / load the numba kernels once

            # ---- max-t: end to end (images in, maps out) and engine only (same array)
            t_nl, _ = run_nilearn(paths, mask_img, n_perm, n_jobs, seed)
            t_nl_eng, ref = run_permuted_ols(Y, n_perm, n_jobs, seed)
            t_us, res = run_ours(Y, mask_img, n_perm, n_jobs, seed)
            t_e2e, res_e2e = run_ours_images(paths, mask_img, n_perm, n_jobs, seed)
            assert np.allclose(res_e2e.max_null, res.max_null, rtol=1e-12, atol=0)
            d_null = np.abs(ref["h0_max_t"][0] - res.max_null).max()
            d_logp = np.abs(ref["logp_max_t"][0] - res.logp("fwe")).max()
            thr_nl, thr_us = fwe_threshold(ref["h0_max_t"][0], 0.05), res.threshold(0.05)
            same = bool(d_null < 1e-8 and d_logp < 1e-8 and abs(thr_nl - thr_us) < 1e-8)
            print(f"max-t  non_parametric_inference {t_nl:7.2f} s vs ours permutation_inference "
                  f"{t_e2e:6.2f} s: x{t_nl / t_e2e:5.1f}", flush=True)
            print(f"max-t  permuted_ols engine      {t_nl_eng:7.2f} s vs ours engine           "
                  f"{t_us:6.2f} s: x{t_nl_eng / t_us:5.1f}", flush=True)
            print(f"       same permutations: max |h0 diff| {d_null:.1e}, max |logp_FWE diff| {d_logp:.1e}, "
                  f"FWE t threshold (5%) nilearn {thr_nl:.6f} / ours {thr_us:.6f}", flush=True)
            rows.append(dict(dataset=name, test="max-t end-to-end", n_perm=n_perm, nilearn_s=t_nl,
                             ours_s=t_e2e, speedup=t_nl / t_e2e, identical=same,
                             note="non_parametric_inference vs permutation_inference"))
            rows.append(dict(dataset=name, test="max-t engine", n_perm=n_perm, nilearn_s=t_nl_eng,
                             ours_s=t_us, speedup=t_nl_eng / t_us, identical=same,
                             note=f"thr {thr_us:.4f}"))

            # ---- TFCE (nilearn extrapolated from two short runs)
            k1, k2 = args.tfce_perms
            t1, _ = run_nilearn(paths, mask_img, k1, n_jobs, seed, tfce=True)
            t2, out2 = run_nilearn(paths, mask_img, k2, n_jobs, seed, tfce=True)
            per_perm = max(t2 - t1, 1e-9) / (k2 - k1)
            fixed = max(t1 - k1 * per_perm, 0.0)
            t_nl_tfce = fixed + n_perm * per_perm
            # identical TFCE null on the k2 permutations nilearn actually ran
            _, res_k2 = run_ours(Y, mask_img, k2, n_jobs, seed, tfce=True, connectivity=6)
            d_tfce = np.abs(masked(out2["logp_max_tfce"], mask_img) - res_k2.logp("tfce_fwe")).max()
            d_obs = np.abs(masked(out2["tfce"], mask_img) - res_k2.tfce).max() / np.abs(res_k2.tfce).max()
            t_us_tfce, res_t = run_ours_images(paths, mask_img, n_perm, n_jobs, seed, tfce=True,
                                               connectivity=6)
            print(f"TFCE   nilearn {t_nl_tfce:8.1f} s (EXTRAPOLATED: {fixed:.1f} s + {per_perm:.2f} s/perm, "
                  f"measured {k1}/{k2} perms: {t1:.1f}/{t2:.1f} s) vs ours permutation_inference (max-t + TFCE) "
                  f"{t_us_tfce:7.2f} s: x{t_nl_tfce / t_us_tfce:6.1f}", flush=True)
            print(f"       TFCE map rel. diff {d_obs:.1e} (nilearn masks to float32); logp_TFCE diff on "
                  f"{k2} same perms {d_tfce:.1e}; TFCE FWE threshold (5%) {res_t.threshold(0.05, 'tfce'):.1f}",
                  flush=True)
            rows.append(dict(dataset=name, test="TFCE (conn 6) end-to-end", n_perm=n_perm,
                             nilearn_s=t_nl_tfce, ours_s=t_us_tfce, speedup=t_nl_tfce / t_us_tfce,
                             identical=bool(d_tfce < 1e-8 and d_obs < 1e-3),
                             note=f"nilearn extrapolated from {k1},{k2} perms"))
            if not args.quick:
                t26, _ = run_ours(Y, mask_img, n_perm, n_jobs, seed, tfce=True, connectivity=26,
                                  nilearn_draws=False)
                rows.append(dict(dataset=name, test="TFCE (conn 26) engine, ours only", n_perm=n_perm,
                                 nilearn_s=np.nan, ours_s=t26, speedup=np.nan, identical=None, note=""))
                print(f"TFCE   ours, 26-connectivity engine: {t26:.2f} s", flush=True)

            # ---- ours at 10x the permutations
            big = 10 * n_perm
            t_big, _ = run_ours(Y, mask_img, big, n_jobs, seed, nilearn_draws=False)
            rows.append(dict(dataset=name, test="max-t engine, ours only", n_perm=big, nilearn_s=np.nan,
                             ours_s=t_big, speedup=np.nan, identical=None, note=""))
            print(f"max-t  ours engine at n_perm={big}: {t_big:.2f} s", flush=True)
            if args.tfce_10x:
                t_bigt, _ = run_ours(Y, mask_img, big, n_jobs, seed, tfce=True, nilearn_draws=False,
                                     connectivity=26)
                rows.append(dict(dataset=name, test="TFCE (conn 26) engine, ours only", n_perm=big,
                                 nilearn_s=np.nan, ours_s=t_bigt, speedup=np.nan, identical=None, note=""))
                print(f"TFCE   ours engine at n_perm={big} (26-conn): {t_bigt:.1f} s", flush=True)

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\ncpu_count={os.cpu_count()}; nilearn TFCE times are extrapolated (see above).")
    return table


if __name__ == "__main__":
    main()
