"""First level: runs -> AR(1) GLM -> session / condition fixed effects -> within-subject contrasts.

The model is nilearn's ``FirstLevelModel`` (same design matrix, smoothing,
mean scaling, AR(1) estimate with 100 bins, contrasts), computed with each step
done once:

* the BOLD file is decompressed once, streamed in blocks of volumes; each
  volume is smoothed in 3D (``scipy.ndimage.gaussian_filter1d`` per axis, the
  arithmetic of nilearn's ``smooth_img``) and masked at once, so the 4D array
  is never held in memory;
* the AR(1) GLM (:func:`ar1_glm`) is nilearn's ``run_glm`` vectorised: the
  same OLS residuals, Yule-Walker coefficient, truncation to 1/100 bins,
  whitening and pseudo-inverse per bin, without its per-voxel Python loops,
  per-bin result objects and string labels.

Subject outputs follow the output contract (see ``first_level_subject``).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.linalg as spl
from scipy.ndimage import gaussian_filter1d
from threadpoolctl import threadpool_limits

from fmri_pain.bids import derivatives as drv
from fmri_pain.errors import InputError
from fmri_pain.glm.first_level.design import (
    SCRUB_MIN_SEGMENT,
    NuisanceModel,
    contrast_vector,
    design_column_kinds,
    expression_weights,
    high_pass_bases,
    make_run_design,
    nuisance_dof,
    run_nuisance_model,
    slice_time_reference,
    read_events,
    stim_weights,
)
from fmri_pain.glm.first_level.fixed_effects import EffectMaps, fixed_effects, linear_combination, z_from_effect
from fmri_pain.bids.runs import Run, subject_of
from fmri_pain.bids.nifti import igzip as _igzip
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.trial import condition_label, difference_contrasts, trial_contrasts


STIM = "stim"
STATS = ("effect", "variance", "z")
AR_BINS = 100  # nilearn's run_glm default
_BLOCK_VOLUMES = 16
_VOXEL_CHUNK = 8192
LOGGER = logging.getLogger(__name__)


# --------------------------------------------------------------------------- GLM on arrays
@dataclass
class GLMResults:
    """A fitted run-level GLM over voxels.

    Attributes
    ----------
    beta : ndarray, shape (n_regressors, n_voxels)
    dispersion : ndarray, shape (n_voxels,)
        Whitened residual sum of squares / (n_scans - n_regressors), as nilearn.
    labels : ndarray of int, shape (n_voxels,)
        Index of each voxel's AR bin in ``rho`` / ``normalized_cov``.
    rho : ndarray, shape (n_bins,)
        AR(1) coefficient of each bin (0 for OLS).
    normalized_cov : ndarray, shape (n_bins, n_regressors, n_regressors)
        ``pinv(wX) @ pinv(wX).T`` of each bin.
    df_residuals : float
        n_scans - rank(X).
    """

    beta: np.ndarray
    dispersion: np.ndarray
    labels: np.ndarray
    rho: np.ndarray
    normalized_cov: np.ndarray
    df_residuals: float

    def contrast(self, con_val: np.ndarray) -> EffectMaps:
        """t contrast ``con_val`` (padded with zeros to the number of regressors)."""
        con_val = np.asarray(con_val, dtype=float).ravel()
        p = self.beta.shape[0]
        if con_val.size > p:
            raise ValueError(f"contrast has {con_val.size} weights for {p} regressors")
        con_val = np.pad(con_val, (0, p - con_val.size))
        effect = con_val @ self.beta
        per_bin = np.einsum("i,kij,j->k", con_val, self.normalized_cov, con_val)
        variance = self.dispersion * per_bin[self.labels]
        return EffectMaps(effect, variance, z_from_effect(effect, variance, self.df_residuals),
                          float(self.df_residuals))


def ar1_glm(Y: np.ndarray, X: np.ndarray, noise_model: str = "ar1", bins: int = AR_BINS,
            signal_scaling: bool = False, dtype: type = np.float32,
            chunk_size: int = _VOXEL_CHUNK) -> GLMResults:
    """Fit nilearn's run-level GLM (``run_glm``) to a data matrix, vectorised.

    Same estimates as :func:`nilearn.glm.first_level.run_glm` with
    ``noise_model="ar1"`` (or ``"ols"``): OLS residuals give a per-voxel
    Yule-Walker AR(1) coefficient, truncated to ``1/bins`` steps; voxels of a
    bin share the whitened design (first row unchanged, as nilearn) and its
    pseudo-inverse. Voxels are processed in chunks (voxel-major, sorted by bin
    so each bin is a contiguous block). Pseudo-inverses and covariances are
    float64; the products with the data run in ``dtype``.

    Parameters
    ----------
    Y : ndarray, shape (n_scans, n_voxels)
    X : ndarray, shape (n_scans, n_regressors)
    noise_model : {"ar1", "ols"}
    bins : int
        AR(1) coefficients are truncated to multiples of ``1 / bins``.
    signal_scaling : bool
        Scale each voxel to percent of its mean first (nilearn's
        ``mean_scaling``, ``FirstLevelModel(signal_scaling=0)``).
    dtype : numpy dtype
        Precision of the data products: float32 (default; twice as fast, relative
        error ~1e-6, far below fMRI noise) or float64 (nilearn's arithmetic).
    chunk_size : int
        Voxels per chunk.

    Returns
    -------
    GLMResults
    """
    if noise_model not in ("ar1", "ols"):
        raise ValueError(f"noise_model must be 'ar1' or 'ols', got {noise_model!r}")
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y of shape {Y.shape} does not match X with {n} rows")
    n_vox = Y.shape[1]
    eps = np.abs(X).sum() * np.finfo(np.float64).eps
    df_residuals = n - np.linalg.matrix_rank(X, eps)
    denom = n - p  # nilearn's dispersion divides by n - n_columns
    mean = np.maximum(Y.mean(axis=0, dtype=np.float64), 1.0) if signal_scaling else None
    Xd = X.astype(dtype)

    models: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}

    def model(key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        if key not in models:
            rho = key * 1.0 / bins
            wX = X.copy()
            if rho != 0.0:
                wX[1:] = wX[1:] - rho * X[:-1]
            calc = spl.pinv(wX)
            models[key] = (wX.astype(dtype), calc.astype(dtype), calc @ calc.T, rho)
        return models[key]

    beta = np.empty((p, n_vox))
    dispersion = np.empty(n_vox)
    keys = np.zeros(n_vox, dtype=np.int64)
    ols_calc = model(0)[1]
    for start in range(0, n_vox, chunk_size):
        stop = min(start + chunk_size, n_vox)
        Yc = np.array(Y[:, start:stop].T, dtype=dtype, order="C")  # (voxels, scans)
        if mean is not None:
            Yc /= mean[start:stop, None].astype(dtype)
            Yc -= 1
            Yc *= 100
        if noise_model == "ar1":
            resid = Yc - (Yc @ ols_calc.T) @ Xd.T
            r0 = np.einsum("ij,ij->i", resid, resid) / n
            r1 = np.einsum("ij,ij->i", resid[:, :-1], resid[:, 1:]) / (n - 1)
            del resid
            with np.errstate(invalid="ignore", divide="ignore"):
                rho = np.where(r0 > 0, r1 / r0, 0.0)
            chunk_keys = (rho * bins).astype(np.int64)  # truncation toward 0, as nilearn
            order = np.argsort(chunk_keys, kind="stable")
            Yc = Yc[order]
            sorted_keys = chunk_keys[order]
        else:
            chunk_keys = sorted_keys = np.zeros(stop - start, dtype=np.int64)
            order = np.arange(stop - start)
        keys[start:stop] = chunk_keys
        bounds = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1, len(sorted_keys)]
        beta_c = np.empty((stop - start, p))
        disp_c = np.empty(stop - start)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            wX, calc, _, rho_k = model(int(sorted_keys[lo]))
            wY = Yc[lo:hi]  # whitened and turned into residuals in place
            if rho_k != 0.0:
                wY[:, 1:] -= dtype(rho_k) * wY[:, :-1]
            b = wY @ calc.T
            wY -= b @ wX.T
            beta_c[lo:hi] = b
            disp_c[lo:hi] = np.einsum("ij,ij->i", wY, wY) / denom
        beta[:, start + order] = beta_c.T
        dispersion[start + order] = disp_c
    order_keys = sorted(models)
    return GLMResults(
        beta=beta,
        dispersion=dispersion,
        labels=np.searchsorted(order_keys, keys),
        rho=np.array([models[k][3] for k in order_keys]),
        normalized_cov=np.stack([models[k][2] for k in order_keys]),
        df_residuals=float(df_residuals),
    )


# --------------------------------------------------------------------------- images
def smoothing_sigmas(affine: np.ndarray, fwhm: float | None) -> np.ndarray:
    """Gaussian sigmas in voxels per axis, as nilearn's ``_smooth_array``."""
    if not fwhm:
        return np.zeros(3)
    vox_size = np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0))
    return float(fwhm) / (np.sqrt(8 * np.log(2)) * vox_size)


def gaussian_kernel_matrix(n: int, sigma: float) -> np.ndarray:
    """The (n, n) matrix of ``gaussian_filter1d(x, sigma)`` (reflect mode): ``K @ x``."""
    return gaussian_filter1d(np.eye(n), sigma, axis=0)


def smooth_block(block: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Smooth each 3D volume of a 4D block; the same filter as :func:`smooth_volume`.

    Each axis is one matrix product with the filter's (n, n) matrix
    (:func:`gaussian_kernel_matrix`), which BLAS runs 3x faster than
    ``gaussian_filter1d``'s line loops despite the zeros; the result equals
    nilearn's ``smooth_img`` (non-finite values zeroed first) to rounding.

    Parameters
    ----------
    block : ndarray, shape (x, y, z, t)
    sigmas : array of 3 floats
        Per-axis sigma in voxels (0: no smoothing along that axis).

    Returns
    -------
    ndarray, shape (t, z, y, x), C-contiguous
        Volume ``i`` is ``out[i]``; its memory is the volume in Fortran order.
    """
    dtype = block.dtype
    A = np.ascontiguousarray(block.T)  # (t, z, y, x); no copy for nibabel's Fortran blocks
    if not np.all(np.isfinite(A)):
        A = np.where(np.isfinite(A), A, 0).astype(dtype)
    t, nz, ny, nx = A.shape
    if sigmas[0] > 0:
        kx = gaussian_kernel_matrix(nx, sigmas[0]).astype(dtype)
        A = (A.reshape(-1, nx) @ kx.T).reshape(t, nz, ny, nx)
    if sigmas[1] > 0:
        ky = gaussian_kernel_matrix(ny, sigmas[1]).astype(dtype)
        A = np.matmul(ky, A)
    if sigmas[2] > 0:
        kz = gaussian_kernel_matrix(nz, sigmas[2]).astype(dtype)
        A = np.matmul(kz, A.reshape(t, nz, ny * nx)).reshape(t, nz, ny, nx)
    return np.ascontiguousarray(A)


def _load_img(path: Path | str, subject: str | None, what: str, keep_open: bool = False):
    try:
        img = nib.load(str(path), keep_file_open=keep_open) if keep_open else nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(f"cannot read {what} image: {exc}", subject=subject, path=path) from exc
    return img


def _open_bold(path: Path | str, subject: str | None):
    """Open a NIfTI for sequential reading (ISA-L for .nii.gz when installed)."""
    path = str(path)
    if _igzip is not None and path.endswith(".gz"):
        fobj = None
        try:
            fobj = _igzip.open(path, "rb")
            holder = nib.FileHolder(filename=path, fileobj=fobj)
            img = nib.Nifti1Image.from_file_map({"header": holder, "image": holder})
            return img, fobj
        except Exception:  # not NIfTI-1 or not readable: let nibabel decide and explain
            if fobj is not None:
                fobj.close()
    return _load_img(path, subject, "BOLD", keep_open=True), None


def _iter_blocks(img, path, subject) -> Iterator[tuple[int, np.ndarray]]:
    n = img.shape[3]
    try:
        for start in range(0, n, _BLOCK_VOLUMES):
            block = np.asarray(img.dataobj[..., start:start + _BLOCK_VOLUMES])
            if block.dtype.kind in "iub":
                block = block.astype(np.float32)
            yield start, block
    except InputError:
        raise
    except Exception as exc:  # truncated gzip, short file ...
        raise InputError(f"cannot read BOLD data: {exc}", subject=subject, path=path) from exc


def load_masked_bold(bold: Path | str, mask: Path | str | None, fwhm: float | None,
                     subject: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a 4D BOLD once, smooth each volume in 3D and keep the voxels of the mask.

    Parameters
    ----------
    bold : path
        4D NIfTI.
    mask : path or None
        Brain mask (non-zero = brain). Resampled (nearest) to the BOLD grid if
        needed. ``None``: nilearn's ``compute_epi_mask`` on the mean image.
    fwhm : float or None
        Smoothing kernel (mm).

    Returns
    -------
    Y : ndarray of float32, shape (n_scans, n_voxels)
    mask : ndarray of bool, shape (x, y, z)
    affine : ndarray (4, 4)

    Raises
    ------
    InputError
        Unreadable or non-4D BOLD, unreadable or empty mask.
    """
    img, fobj = _open_bold(bold, subject)
    try:
        return _load_masked(img, bold, mask, fwhm, subject)
    finally:
        if fobj is not None:
            fobj.close()


def _load_masked(img, bold, mask, fwhm, subject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise InputError(f"BOLD must be a 4D image, got shape {img.shape}", subject=subject, path=bold)
    shape3, affine = img.shape[:3], img.affine
    if mask is None:
        total = np.zeros(shape3)
        for _, block in _iter_blocks(img, bold, subject):
            total += np.nan_to_num(block).sum(axis=3)
        from nilearn.masking import compute_epi_mask

        mask_bool = np.asarray(
            compute_epi_mask(nib.Nifti1Image(total / img.shape[3], affine)).dataobj
        ).astype(bool)
    else:
        mask_img = _load_img(mask, subject, "mask")
        if mask_img.shape[:3] != shape3 or not np.allclose(mask_img.affine, affine, atol=1e-3):
            from nilearn.image import resample_to_img

            warnings.warn(f"sub-{subject}: mask {mask} resampled to the BOLD grid", stacklevel=2)
            mask_img = resample_to_img(mask_img, nib.Nifti1Image(np.zeros(shape3, np.int8), affine),
                                       interpolation="nearest", force_resample=True,
                                       copy_header=True)
        try:
            mask_bool = np.asarray(mask_img.dataobj).reshape(shape3) != 0
        except Exception as exc:
            raise InputError(f"cannot read mask data: {exc}", subject=subject, path=mask) from exc
    if not mask_bool.any():
        raise InputError("brain mask is empty", subject=subject, path=mask or bold)
    sigmas = smoothing_sigmas(affine, fwhm)
    # positions of the mask's voxels (in np.nonzero order, as mask indexing) in a
    # Fortran-ordered volume: rows of smooth_block's output
    index = np.ravel_multi_index(np.nonzero(mask_bool), shape3, order="F")
    Y = None
    for start, block in _iter_blocks(img, bold, subject):
        if Y is None:  # float32 holds int16 data exactly and fMRI far below its precision
            Y = np.empty((img.shape[3], index.size), dtype=np.float32)
        smoothed = smooth_block(np.asarray(block, dtype=Y.dtype), sigmas)
        k = smoothed.shape[0]
        np.take(smoothed.reshape(k, -1), index, axis=1, out=Y[start:start + k])
    return Y, mask_bool, affine


# --------------------------------------------------------------------------- one run
@dataclass
class RunFit:
    """Contrast maps of one run (over the run's mask) and what produced them."""

    run: Run
    mask: np.ndarray
    affine: np.ndarray
    design: pd.DataFrame
    contrasts: dict[str, EffectMaps]
    weights: dict[str, dict[str, float]]
    n_volumes: int
    n_censored: int
    dof: float
    model: dict[str, Any] = field(default_factory=dict)
    """Sidecar facts of the run's model (``DriftModel``, ``NuisanceDofFraction`` ...)."""
    warnings: list[str] = field(default_factory=list)


def drop_constant_voxels(Y: np.ndarray, mask: np.ndarray, run: Run
                         ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Leave voxels whose signal never changes out of the run (they carry no response).

    Returns
    -------
    Y, mask : the data and mask without constant voxels
    warning : str or None
        Set when some (not all) voxels were left out.

    Raises
    ------
    InputError
        If every voxel of the mask is constant over the run (no data to fit).
    """
    constant = np.ptp(Y, axis=0) == 0
    if not constant.any():
        return Y, mask, None
    if constant.all():
        raise InputError(f"every one of the {constant.size} voxels in the mask is constant over the "
                         f"run's {Y.shape[0]} volumes: no signal to model",
                         subject=run.subject, path=run.bold)
    mask = mask.copy()
    mask[mask] = ~constant
    message = (f"sub-{run.subject} {run.bold}: {int(constant.sum())} of {constant.size} mask voxels "
               "are constant over the run and are left out of its maps")
    return Y[:, ~constant], mask, message


def _run_contrast_weights(trial_types: list[str], spec: AnalysisSpec, run: Run
                          ) -> dict[str, dict[str, float]]:
    weights: dict[str, dict[str, float]] = {}
    try:
        weights[STIM] = stim_weights(trial_types, spec.events)
    except ValueError as exc:
        raise InputError(f"no stim contrast: {exc}", subject=run.subject, path=run.events) from exc
    for name, expression in spec.first_level.contrasts.items():
        try:
            weights[name] = expression_weights(expression, trial_types)
        except ValueError as exc:
            raise InputError(f"contrast {name!r} of the spec: {exc}", subject=run.subject,
                             path=run.events) from exc
    return weights


def fit_run(run: Run, spec: AnalysisSpec) -> RunFit:
    """Fit one run: load + smooth + mask, design, confounds, censoring, AR(1) GLM, contrasts.

    Raises
    ------
    InputError
        Unreadable inputs, too few volumes after censoring.
    """
    fl = spec.first_level
    try:
        tr = run.tr
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("RepetitionTime missing from the BOLD metadata",
                         subject=run.subject, path=run.bold) from exc
    events = read_events(run.events, run.subject, default_trial_type=spec.events.on_trial_type)
    Y, mask, affine = load_masked_bold(run.bold, run.mask, fl.smoothing_fwhm, run.subject)
    messages: list[str] = []
    Y, mask, constant = drop_constant_voxels(Y, mask, run)
    if constant:
        messages.append(constant)
    n_scans = Y.shape[0]
    st_ref = slice_time_reference(run.metadata, tr, fl.slice_time_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the full design below reports what matters
        kinds = design_column_kinds(make_run_design(n_scans, tr, events, None, fl, st_ref,
                                                    messages=[]).columns)
    n_task = sum(k == "task" for k in kinds.values())
    n_drift = sum(k == "drift" for k in kinds.values())
    nuisance = run_nuisance_model(run, fl.confounds, n_scans, n_task=n_task, n_drift=n_drift)
    messages += nuisance.warnings
    confounds, sample_mask = nuisance.confounds, nuisance.sample_mask
    design = make_run_design(n_scans, tr, events, confounds, fl, slice_time_ref=st_ref,
                             subject=run.subject, events_path=run.events, messages=messages)
    if sample_mask is not None:
        design = design.iloc[sample_mask]
        Y = Y[sample_mask]
    n_kept = Y.shape[0]
    if n_kept < max(spec.min_volumes, design.shape[1] + 1):
        raise InputError(f"only {n_kept} of {n_scans} volumes left after censoring "
                         f"(minimum {spec.min_volumes}, {design.shape[1]} regressors)",
                         subject=run.subject, path=run.confounds or run.bold)
    results = ar1_glm(Y, design.to_numpy(), noise_model=fl.noise_model, signal_scaling=True)
    del Y
    columns = design.columns.tolist()
    conf_names = [] if confounds is None else confounds.columns.tolist()
    model = run_model_record(design, conf_names, nuisance, fl, n_scans, n_scans - n_kept,
                             results.df_residuals)
    budget = fl.confounds.max_nuisance_fraction
    if model["NuisanceDofFraction"] > budget:
        messages.append(
            f"sub-{run.subject} {run.bold}: the nuisance model takes {model['NuisanceDegreesOfFreedom']} "
            f"of the run's {model['RunDegreesOfFreedom']} degrees of freedom "
            f"({model['NuisanceDofFraction']:.0%} > first_level.confounds.max_nuisance_fraction "
            f"{budget:g}; {model['ResidualDegreesOfFreedom']:g} left)")
    for message in messages:
        LOGGER.warning(message)
    model["Warnings"] = list(messages)
    trial_types = sorted(events["trial_type"].unique())
    weights = _run_contrast_weights(trial_types, spec, run)
    contrasts = {name: results.contrast(contrast_vector(w, columns)) for name, w in weights.items()}
    return RunFit(run=run, mask=mask, affine=affine, design=design, contrasts=contrasts,
                  weights=weights, n_volumes=n_scans, n_censored=n_scans - n_kept,
                  dof=results.df_residuals, model=model, warnings=messages)


def run_model_record(design: pd.DataFrame, confound_names: list[str], nuisance: NuisanceModel,
                     fl: FirstLevelSpec, n_scans: int, n_censored: int, residual_dof: float
                     ) -> dict[str, Any]:
    """The design sidecar's account of a run's model: drift basis, nuisance columns, dof."""
    columns = design.columns.tolist()
    bases = high_pass_bases(columns)
    n_drift = sum(k == "drift" for k in design_column_kinds(columns, confound_names).values())
    if fl.drift_model == "cosine":
        basis = (f"nilearn cosine drift (drift_1..drift_{n_drift}), cut-off {1 / fl.high_pass:g} s"
                 if n_drift else f"nilearn cosine drift: no regressor below {fl.high_pass:g} Hz for this run")
    elif fl.drift_model == "polynomial":
        basis = f"nilearn polynomial drift (drift_1..drift_{n_drift})"
    else:
        basis = "none"
    return {
        "DriftModel": fl.drift_model,
        "HighPass": fl.high_pass if fl.drift_model == "cosine" else None,
        "HighPassBasis": basis,
        "HighPassBases": bases,
        "UnusedConfoundsColumns": list(nuisance.unused_columns),
        "ConfoundsStrategy": nuisance.strategy,
        "ConfoundsStrategyRequested": nuisance.requested,
        "Censoring": bool(nuisance.censoring),
        "ConfoundsRegressors": list(confound_names),
        **nuisance_dof(columns, confound_names, n_scans, n_censored, residual_dof),
    }


# --------------------------------------------------------------------------- subject
@dataclass
class SubjectMaps:
    """What the first level wrote for one subject.

    Attributes
    ----------
    subject : str
    maps : DataFrame
        One row per written map: subject, session, condition, period, contrast,
        stat, path, level (run/session/condition/subject), run, dof.
    design_files : list of Path
        Design matrix TSV and PNG of every run.
    qc : DataFrame
        Per run: subject, session, run, condition, n_volumes, n_censored, dof, strategy,
        n_motion, n_drift, n_other, nuisance_fraction.
    warnings : list of str
        Every warning the runs' fits recorded (also in the design sidecars).
    """

    subject: str
    maps: pd.DataFrame
    design_files: list[Path] = field(default_factory=list)
    qc: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)


MAP_COLUMNS = ["subject", "session", "condition", "period", "contrast", "stat", "path",
               "level", "run", "dof"]


def _combine(fits: list[RunFit], name: str) -> tuple[EffectMaps, np.ndarray] | None:
    """Fixed effects of contrast ``name`` over runs, on the intersection of their masks."""
    fits = [f for f in fits if name in f.contrasts]
    if not fits:
        return None
    common = np.logical_and.reduce([f.mask for f in fits])
    if len(fits) == 1:
        return fits[0].contrasts[name], fits[0].mask
    effects, variances = [], []
    for f in fits:
        sel = common[f.mask]
        effects.append(f.contrasts[name].effect[sel])
        variances.append(f.contrasts[name].variance[sel])
    return fixed_effects(effects, variances, dofs=[f.contrasts[name].dof for f in fits]), common


def _unique(values: list[Any]) -> Any:
    values = list(dict.fromkeys(values))
    return values[0] if len(values) == 1 else None


class _Writer:
    """Writes maps and sidecars of one subject; collects the table."""

    def __init__(self, output_dir: Path, spec: AnalysisSpec, subject: str, task: str,
                 space: str | None) -> None:
        self.output_dir, self.spec, self.subject, self.task = Path(output_dir), spec, subject, task
        self.space = space
        self.rows: list[dict[str, Any]] = []
        self._prov: dict[Run, dict[str, Any]] = {}
        self.models: dict[Run, dict[str, Any]] = {}

    def provenance(self, runs: list[Run]) -> dict[str, Any]:
        for run in runs:
            if run not in self._prov:
                inputs = {k: v for k, v in (("bold", run.bold), ("events", run.events),
                                            ("confounds", run.confounds), ("mask", run.mask))
                          if v is not None}
                self._prov[run] = drv.provenance(
                    {f"{k}[{run.label}]": v for k, v in inputs.items()}, dataset=self.output_dir)
        record = dict(self._prov[runs[0]])
        record["Sources"] = [s for r in runs for s in self._prov[r]["Sources"]]
        record["SourceChecksums"] = {k: v for r in runs for k, v in self._prov[r]["SourceChecksums"].items()}
        return record

    def parameters(self, weights: Mapping[str, float] | None = None) -> dict[str, Any]:
        spec_dict = self.spec.to_dict()
        params = {"first_level": spec_dict["first_level"], "events": spec_dict["events"],
                  "ar_bins": AR_BINS, "signal_scaling": "percent of the voxel mean",
                  "scrub_min_segment": SCRUB_MIN_SEGMENT}
        if weights is not None:
            params["weights"] = dict(weights)
        return params

    def write(self, maps: EffectMaps, mask: np.ndarray, affine: np.ndarray, *, contrast: str,
              level: str, runs: list[Run], session: str | None = None, run: int | None = None,
              condition: str | None = None, period: int | None = None,
              weights: Mapping[str, float] | None = None, description: str = "") -> None:
        sidecar = self.provenance(runs)
        sidecar.update({
            "Parameters": self.parameters(weights),
            "Contrast": contrast, "Level": level, "DegreesOfFreedom": maps.dof,
            "Runs": [r.label for r in runs], "Description": description,
            "SpatialReference": {"Space": self.space,
                                 "Resampling": "none: the maps are on the grid of the preprocessed BOLD "
                                               "(a brain mask on another grid is resampled to it, "
                                               "nearest neighbour, with a warning)"},
        })
        if any(r in self.models for r in runs):
            sidecar["RunModels"] = {r.label: {k: self.models[r][k] for k in _RUN_MODEL_KEYS}
                                    for r in runs if r in self.models}
        for stat, values in zip(STATS, maps):
            if run is None:
                path = drv.statmap_path(self.output_dir, contrast=contrast, stat=stat,
                                        subject=self.subject, session=session, task=self.task,
                                        space=self.space)
            else:
                name = drv.bids_filename(
                    {"sub": self.subject, "ses": session, "task": self.task, "run": run,
                     "space": self.space, "contrast": contrast, "stat": stat},
                    "statmap", ".nii.gz")
                path = drv.subject_dir(self.output_dir, self.subject, session) / name
            volume = np.zeros(mask.shape, dtype=np.float32)
            volume[mask] = values
            img = nib.Nifti1Image(volume, affine)
            img.header.set_xyzt_units("mm")
            drv.write_nifti(img, path, sidecar={**sidecar, "Stat": stat})
            self.rows.append({"subject": self.subject, "session": session, "condition": condition,
                              "period": period, "contrast": contrast, "stat": stat, "path": path,
                              "level": level, "run": run, "dof": maps.dof})


_RUN_MODEL_KEYS = ("ConfoundsStrategy", "Censoring", "HighPassBasis", "NuisanceRegressors",
                   "NuisanceDofFraction", "ResidualDegreesOfFreedom", "Warnings")
"""Per-run model facts repeated in every statmap sidecar (the design sidecar has them all)."""


def _write_design(fit: RunFit, output_dir: Path, writer: _Writer, png: bool = True) -> list[Path]:
    """Design matrix TSV (rows kept after censoring) with sidecar, and its plot."""
    run = fit.run
    folder = drv.subject_dir(output_dir, run.subject, run.session)
    stem = drv.bids_filename(dict(run.entities), "design", "")
    tsv = folder / f"{stem}.tsv"
    sidecar = writer.provenance([run])
    sidecar.update({"Parameters": writer.parameters(), "NumberOfVolumes": fit.n_volumes,
                    "CensoredVolumes": fit.n_censored, "DegreesOfFreedom": fit.dof,
                    "RepetitionTime": run.tr, **fit.model,
                    "Description": "Design matrix of the run (rows: volumes kept after censoring)"})
    drv.write_tsv(fit.design.reset_index(names="frame_time"), tsv, sidecar=sidecar)
    if not png:
        return [tsv]
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry
    from nilearn.plotting import plot_design_matrix

    fig = Figure(figsize=(max(4.0, 0.25 * fit.design.shape[1] + 2), 7))
    plot_design_matrix(fit.design, axes=fig.add_subplot())
    fig.subplots_adjust(top=0.72, bottom=0.04, left=0.08, right=0.98)  # room for column names
    drv.write_figure(fig, folder / f"{stem}.png", bbox_inches=None)  # "tight" draws twice
    return [tsv, folder / f"{stem}.png"]


def _canonical_condition(condition: str, conditions: tuple[str, ...]) -> str | None:
    lookup = {c.lower(): c for c in conditions}
    return lookup.get(str(condition).lower())


def first_level_subject(runs: list[Run], spec: AnalysisSpec, output_dir: Path | str,
                        write_design_png: bool = True) -> SubjectMaps:
    """First level of one subject: run GLMs, session and condition fixed effects, contrasts.

    Writes, under ``output_dir`` (BIDS derivatives, JSON sidecar with provenance
    beside each file):

    * per run: ``sub-XX[_ses-YY]_task-T[_run-R]_design.tsv`` and ``.png``;
    * per session: ``contrast-stim`` (and each spec contrast) ``stat-{effect,variance,z}``
      in ``sub-XX/ses-YY/func`` (fixed effects over the session's runs);
      session-less datasets with several runs get per-run maps (``run-R``) instead;
    * trial mode (runs whose condition is one of ``spec.conditions``): per condition
      ``contrast-{scs,drgs,dual}`` in ``sub-XX/func`` (fixed effects over that
      condition's runs) and the within-subject differences (``dualMinusScs`` ...)
      the subject's conditions support;
    * subject level in ``sub-XX/func``: ``contrast-stim`` over all runs (one-condition
      studies) and every spec contrast over all runs.

    Parameters
    ----------
    runs : list of Run
        All runs of one subject.
    spec : AnalysisSpec
    output_dir : path
    write_design_png : bool
        Also plot the design matrices.

    Returns
    -------
    SubjectMaps

    Raises
    ------
    InputError
        Bad inputs (named with subject and file).
    """
    subject = subject_of(runs)
    output_dir = Path(output_dir)
    task = _unique([r.task for r in runs]) or runs[0].task
    runs = sorted(runs, key=lambda r: (r.session or "", r.run or 0))
    # BLAS threads = the worker's threads: multi-threaded OpenBLAS on these small
    # matrices is slower, badly so when cores are shared (pinv 100x slower here).
    with threadpool_limits(limits=max(1, int(spec.execution.threads_per_worker)), user_api="blas"):
        fits = [fit_run(run, spec) for run in runs]
    # maps are named by the template space of the BOLD they come from, never a constant
    try:
        space = drv.data_space([r.bold for r in runs], "the runs")
    except ValueError as exc:
        raise InputError(str(exc), subject=subject) from None
    writer = _Writer(output_dir, spec, subject, task, space)
    writer.models = {f.run: f.model for f in fits}
    design_files: list[Path] = []
    for fit in fits:
        design_files += _write_design(fit, output_dir, writer, png=write_design_png)
    qc = pd.DataFrame([{"subject": subject, "session": f.run.session, "run": f.run.run,
                        "condition": f.run.condition, "n_volumes": f.n_volumes,
                        "n_censored": f.n_censored, "dof": f.dof,
                        "strategy": f.model.get("ConfoundsStrategy"),
                        "n_motion": f.model.get("NuisanceRegressors", {}).get("Motion"),
                        "n_drift": f.model.get("NuisanceRegressors", {}).get("Drift"),
                        "n_other": f.model.get("NuisanceRegressors", {}).get("Other"),
                        "nuisance_fraction": f.model.get("NuisanceDofFraction")} for f in fits])
    names = list(dict.fromkeys(n for f in fits for n in f.contrasts))
    first_weights = {n: next(f.weights[n] for f in fits if n in f.weights) for n in names}

    # session level (or run level for session-less multi-run data)
    by_session: dict[str | None, list[RunFit]] = defaultdict(list)
    for fit in fits:
        by_session[fit.run.session].append(fit)
    for session, sfits in by_session.items():
        groups = [sfits] if session is not None else ([[f] for f in sfits] if len(sfits) > 1 else [])
        for group in groups:
            for name in names:
                combined = _combine(group, name)
                if combined is None:
                    continue
                maps, mask = combined
                single = session is None
                writer.write(maps, mask, group[0].affine, contrast=name,
                             level="run" if single else "session", runs=[f.run for f in group],
                             session=session, run=group[0].run.run if single else None,
                             condition=_unique([f.run.condition for f in group]),
                             period=_unique([f.run.period for f in group]),
                             weights=first_weights[name])

    # condition level and within-subject differences (trial mode)
    by_condition: dict[str, list[RunFit]] = defaultdict(list)
    for fit in fits:
        cond = _canonical_condition(fit.run.condition, spec.conditions)
        if cond is not None:
            by_condition[cond].append(fit)
    cond_maps: dict[str, tuple[EffectMaps, np.ndarray]] = {}
    for cond, cfits in by_condition.items():
        combined = _combine(cfits, STIM)
        if combined is None:
            continue
        cond_maps[cond] = combined
        writer.write(combined[0], combined[1], cfits[0].affine, contrast=condition_label(cond),
                     level="condition", runs=[f.run for f in cfits],
                     session=None, condition=cond,
                     period=_unique([f.run.period for f in cfits]),
                     weights=first_weights[STIM], description=f"{cond} ON > OFF")
    if cond_maps:
        affine = fits[0].affine
        for name, con in difference_contrasts(trial_contrasts(tuple(spec.conditions))).items():
            used = con.used_conditions
            if not all(c in cond_maps for c in used):
                continue
            common = np.logical_and.reduce([cond_maps[c][1] for c in used])
            effects = {c: cond_maps[c][0].effect[common[cond_maps[c][1]]] for c in used}
            variances = {c: cond_maps[c][0].variance[common[cond_maps[c][1]]] for c in used}
            dofs = {c: cond_maps[c][0].dof for c in used}
            maps = linear_combination(effects, variances, con.as_dict(), dofs)
            writer.write(maps, common, affine, contrast=name, level="subject",
                         runs=[f.run for c in used for f in by_condition[c]],
                         weights=con.as_dict(), description=con.description)

    # subject level over all runs: stim for one-condition studies, spec contrasts always
    subject_names = [n for n in names if n != STIM or not cond_maps]
    for name in subject_names:
        combined = _combine(fits, name)
        if combined is None:
            continue
        writer.write(combined[0], combined[1], fits[0].affine, contrast=name, level="subject",
                     runs=[f.run for f in fits if name in f.contrasts],
                     condition=_unique([f.run.condition for f in fits]),
                     weights=first_weights[name])

    maps = pd.DataFrame(writer.rows, columns=MAP_COLUMNS)
    return SubjectMaps(subject=subject, maps=maps, design_files=design_files, qc=qc,
                       warnings=[w for f in fits for w in f.warnings])
