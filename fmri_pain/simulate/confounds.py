"""fMRIPrep-style confounds table computed from the simulated preprocessed BOLD."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from fmri_pain.simulate.model import MOTION_COLUMNS, framewise_displacement


def friston_terms(signal: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """A signal and its derived regressors, named and ordered as fMRIPrep writes them.

    ``name`` is the signal itself, ``name_derivative1`` its backward difference (undefined, NaN, at the
    first volume, which fMRIPrep writes ``n/a``), then that difference squared (``name_derivative1_power2``)
    and the signal squared (``name_power2``).
    """
    x = np.asarray(signal, dtype=np.float64)
    step = np.full(x.shape, np.nan)
    step[1:] = x[1:] - x[:-1]
    return {name: x, f"{name}_derivative1": step, f"{name}_derivative1_power2": step * step,
            f"{name}_power2": x * x}


def motion_expansion(motion: np.ndarray) -> dict[str, np.ndarray]:
    """Friston's 24 motion regressors of ``motion`` (T, 6): the 4 :func:`friston_terms` of each parameter.

    Columns in fMRIPrep's order: ``trans_x, trans_x_derivative1, trans_x_derivative1_power2,
    trans_x_power2, trans_y ...`` through ``rot_z``.
    """
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim != 2 or motion.shape[1] != len(MOTION_COLUMNS):
        raise ValueError(f"motion must be (T, {len(MOTION_COLUMNS)}), got shape {motion.shape}")
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(MOTION_COLUMNS):
        columns.update(friston_terms(motion[:, j], name))
    return columns


def cosine_basis(n: int, tr: float, cutoff: float = 128.0) -> np.ndarray:
    """DCT high-pass regressors as fMRIPrep writes them (nilearn's cosine drift without the constant)."""
    order = int(np.floor(2 * n * (1.0 / cutoff) * tr))
    t = np.arange(n)
    cols = [np.sqrt(2.0 / n) * np.cos(np.pi / n * (t + 0.5) * k) for k in range(1, order)]
    return np.array(cols).T if cols else np.zeros((n, 0))


def _dvars(mfunc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-standardised and standardised DVARS as nipype's ``compute_dvars`` (Nichols 2013)."""
    mfunc = mfunc / np.median(mfunc) * 1000.0
    q75 = np.percentile(mfunc, 75, axis=1, method="lower")
    q25 = np.percentile(mfunc, 25, axis=1, method="lower")
    func_sd = (q75 - q25) / 1.349
    keep = func_sd > 0
    mfunc, func_sd = mfunc[keep], func_sd[keep]
    x = mfunc - mfunc.mean(axis=1, keepdims=True)
    ar1 = (x[:, 1:] * x[:, :-1]).sum(axis=1) / np.maximum((x * x).sum(axis=1), 1e-12)
    diff_sd_mean = (np.sqrt(np.maximum((1 - ar1) * 2, 0.0)) * func_sd).mean()
    dvars = np.sqrt(np.square(np.diff(mfunc, axis=1)).mean(axis=0))
    return dvars, dvars / diff_sd_mean


def _residualise(y: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Remove the column space of ``basis`` (T, p) from ``y`` (T, V)."""
    q, _ = np.linalg.qr(basis)
    return y - q @ (q.T @ y)


def _compcor(ts: np.ndarray, hp: np.ndarray, n_comp: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of high-passed, variance-normalised voxel time series (voxels, T); returns (T, n) and var explained."""
    t = ts.shape[1]
    y = _residualise(ts.T.astype(np.float64), np.column_stack([np.ones(t), hp]))
    sd = y.std(axis=0)
    y = y[:, sd > 0] / sd[sd > 0]
    evals, evecs = np.linalg.eigh(y @ y.T)  # T x T: cheap for few volumes and many voxels
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    # fix the sign so the largest-magnitude loading of every component is positive (deterministic output)
    signs = np.sign(evecs[np.abs(evecs).argmax(axis=0), np.arange(evecs.shape[1])])
    evecs = evecs * np.where(signs == 0, 1, signs)
    return evecs[:, :n_comp], evals / evals.sum()


def compute_confounds(
    bold: np.ndarray,
    brain: np.ndarray,
    wm_prob: np.ndarray,
    csf_prob: np.ndarray,
    motion: np.ndarray,
    tr: float,
) -> tuple[pd.DataFrame, dict]:
    """Confounds (DataFrame with NaN for fMRIPrep's 'n/a') and the JSON sidecar metadata.

    ``motion`` holds the true head motion (mm, rad) of every volume relative to the first.
    """
    n = bold.shape[-1]
    wm_mask = ndimage.binary_erosion(wm_prob > 0.9) & brain
    csf_mask = (csf_prob > 0.6) & brain
    if csf_mask.sum() < 5:
        csf_mask = (csf_prob > 0.4) & brain
    cols: dict[str, np.ndarray] = {}
    mbrain = bold[brain]
    cols.update(friston_terms(mbrain.mean(axis=0), "global_signal"))
    cols.update(friston_terms(bold[csf_mask].mean(axis=0), "csf"))
    cols.update(friston_terms(bold[wm_mask].mean(axis=0), "white_matter"))
    dvars, std_dvars = _dvars(mbrain)
    cols["std_dvars"] = np.concatenate([[np.nan], std_dvars])
    cols["dvars"] = np.concatenate([[np.nan], dvars])
    fd = framewise_displacement(motion)
    cols["framewise_displacement"] = np.concatenate([[np.nan], fd[1:]])

    hp = cosine_basis(n, tr)
    meta: dict[str, dict] = {}
    # tCompCor: the 2 % highest-variance brain voxels (after removing the high-pass basis)
    y = mbrain.T.astype(np.float64)
    resid = _residualise(y, np.column_stack([np.ones(n), hp]))
    var = resid.var(axis=0)
    top = var >= np.percentile(var, 98)
    comps, ve = _compcor(mbrain[top], hp, 3)
    for i in range(comps.shape[1]):
        name = f"t_comp_cor_{i:02d}"
        cols[name] = comps[:, i]
        meta[name] = {"Method": "tCompCor", "Retained": True, "VarianceExplained": float(ve[i]),
                      "CumulativeVarianceExplained": float(ve[: i + 1].sum())}
    comps, ve = _compcor(bold[wm_mask | csf_mask], hp, 6)
    for i in range(comps.shape[1]):
        name = f"a_comp_cor_{i:02d}"
        cols[name] = comps[:, i]
        meta[name] = {"Method": "aCompCor", "Mask": "combined", "Retained": True,
                      "VarianceExplained": float(ve[i]), "CumulativeVarianceExplained": float(ve[: i + 1].sum())}
    for i in range(hp.shape[1]):
        cols[f"cosine{i:02d}"] = hp[:, i]
    cols.update(motion_expansion(motion))
    outliers = np.flatnonzero((np.nan_to_num(cols["framewise_displacement"]) > 0.5)
                              | (np.nan_to_num(cols["std_dvars"]) > 1.5))
    for i, vol in enumerate(outliers):
        col = np.zeros(n)
        col[vol] = 1.0
        cols[f"motion_outlier{i:02d}"] = col
    frame = pd.DataFrame(cols)
    for name in frame.columns:
        if name.startswith(("trans", "rot")):
            meta.setdefault(name, {"Description": "true head motion relative to the first volume",
                                   "Units": "mm" if name.startswith("trans") else "rad"})
    meta["framewise_displacement"] = {"Description": "Power et al. 2012, 50 mm head radius", "Units": "mm"}
    return frame, meta
