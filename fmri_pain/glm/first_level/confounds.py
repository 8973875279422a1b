"""A run's nuisance model: confounds (nilearn ``load_confounds``), censoring, the ``auto`` motion choice.

The nuisance model's cost is counted against the run's degrees of freedom
(:func:`~fmri_pain.glm.first_level.design.nuisance_dof`); ``strategy: auto``
(:func:`choose_motion_model`) picks the motion expansion the run can afford.
The TSV's ``cosine*`` columns are never loaded: the spec's drift model is the
design's only high-pass basis.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fmri_pain.bids.runs import Run
from fmri_pain.config.first_level import ConfoundsSpec
from fmri_pain.confound_names import MOTION as MOTION6
from fmri_pain.errors import InputError

SCRUB_MIN_SEGMENT = 5
"""nilearn's ``scrub``: kept segments shorter than this many volumes are censored too (Power et al. 2014)."""

N_MOTION = {"motion24": 24, "motion6": 6, "acompcor": 24, "none": 0}
"""Motion regressors of each explicit confounds strategy."""

HIGH_PASS_PREFIX = "cosine"
"""Prefix of the confounds TSV's DCT high-pass columns (fMRIPrep ``cosine00`` ...)."""


def choose_motion_model(n_scans: int, n_task: int, n_drift: int, n_censored: int = 0,
                        n_other: int = 0, budget: float = 0.25) -> str:
    """Motion expansion of ``strategy: auto``: ``"motion24"`` if the run can afford it, else ``"motion6"``.

    The 24-parameter model (the six rigid-body parameters, their temporal
    derivatives and the squares of both; Friston et al. 1996, Satterthwaite et
    al. 2013) is used when it, the drift basis, other confounds and the censored
    volumes together take at most ``budget`` of the run's degrees of freedom
    (volumes less task regressors and constant); otherwise the six parameters.
    Every regressor and every censored volume costs one temporal degree of
    freedom (Parkes et al. 2018 measure this loss; Power et al. 2014 on
    censoring); on a short, slow run (96 volumes at TR 7 s: 94 degrees of freedom,
    10 cosine drifts) motion24 would take over a third of them, while on a long,
    fast one (350 volumes at TR 2 s) it takes a tenth.

    Parameters
    ----------
    n_scans : int
        Volumes of the run before censoring.
    n_task : int
        Task regressors (all trial types and HRF basis columns).
    n_drift : int
        Drift regressors of the spec's drift model.
    n_censored : int
        Volumes that censoring removes.
    n_other : int
        Further confound columns (e.g. aCompCor).
    budget : float
        Largest fraction of the run's degrees of freedom the nuisance model may take.

    Returns
    -------
    str
    """
    available = n_scans - n_task - 1
    cost = N_MOTION["motion24"] + n_drift + n_other + n_censored
    return "motion24" if available > 0 and cost <= budget * available else "motion6"


def confounds_kwargs(cspec: ConfoundsSpec, columns: list[str], strategy: str | None = None,
                     scrub: bool | None = None) -> dict:
    """``load_confounds`` arguments for a confounds strategy and the TSV's columns.

    ``strategy`` and ``scrub`` override the spec's (``auto`` loads the 24
    motion regressors, or the six if the TSV has no expansions). The TSV's
    ``cosine*`` columns are requested only where nilearn insists (with
    aCompCor); :func:`load_run_confounds` removes them again.
    """
    strategy = cspec.strategy if strategy is None else strategy
    scrub = cspec.scrub if scrub is None else scrub
    if strategy == "auto":
        strategy = "motion24" if "trans_x_derivative1_power2" in columns else "motion6"
    names: list[str] = []
    kwargs: dict = {}
    if strategy != "none":
        names.append("motion")
        kwargs["motion"] = "basic" if strategy == "motion6" else "full"
        if strategy == "acompcor":
            names += ["high_pass", "compcor"]
            kwargs.update(compcor="anat_combined", n_compcor=cspec.n_acompcor)
    if scrub:
        names.append("scrub")
        kwargs.update(scrub=SCRUB_MIN_SEGMENT, fd_threshold=cspec.fd_threshold,
                      std_dvars_threshold=cspec.std_dvars_threshold)
    kwargs["strategy"] = tuple(names)
    return kwargs


@dataclass
class NuisanceModel:
    """The confounds and censoring of one run, and how they were chosen.

    Attributes
    ----------
    confounds : DataFrame or None
        Regressors added to the design (never ``cosine*``).
    sample_mask : ndarray of int or None
        Volumes kept (``None``: all).
    strategy : str
        The strategy applied (``auto`` resolved to ``motion24`` or ``motion6``).
    requested : str
        The spec's strategy.
    censoring : bool
        Whether high-motion volumes were censored.
    n_censored : int
        Volumes removed (censoring and non-steady-state volumes).
    unused_columns : list of str
        The TSV's ``cosine*`` columns, left out (the spec's drift model is the basis).
    warnings : list of str
    """

    confounds: pd.DataFrame | None = None
    sample_mask: np.ndarray | None = None
    strategy: str = "none"
    requested: str = "none"
    censoring: bool = False
    n_censored: int = 0
    unused_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_nuisance_model(run: Run, cspec: ConfoundsSpec, n_scans: int, n_task: int = 1,
                       n_drift: int = 0) -> NuisanceModel:
    """Confounds and censoring of a run, with ``strategy: auto`` resolved for this run.

    ``auto``: censoring (if ``cspec.scrub``) is kept only while it removes at most
    ``cspec.max_censored_fraction`` of the volumes (Power et al. 2014 censor; a run
    beyond that bound is kept uncensored with a warning, cf. Parkes et al. 2018's
    exclusion of subjects with more than 20 % high-motion volumes); then
    :func:`choose_motion_model` picks motion24 or motion6 under
    ``cspec.max_nuisance_fraction``. Explicit strategies are applied as given.

    Parameters
    ----------
    run : Run
    cspec : ConfoundsSpec
    n_scans : int
    n_task : int
        Task regressors of the run's design.
    n_drift : int
        Drift regressors of the run's design.

    Returns
    -------
    NuisanceModel

    Raises
    ------
    InputError
        As :func:`load_run_confounds`.
    """
    model = NuisanceModel(requested=cspec.strategy, strategy=cspec.strategy)
    if run.confounds is None:
        return model
    try:
        columns = pd.read_csv(run.confounds, sep="\t", nrows=0).columns.tolist()
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read confounds file: {exc}", subject=run.subject,
                         path=run.confounds) from exc
    model.unused_columns = [c for c in columns if c.startswith(HIGH_PASS_PREFIX)]
    strategy = cspec.strategy
    confounds, sample_mask = load_run_confounds(run, cspec, n_scans)
    n_censored = 0 if sample_mask is None else n_scans - len(sample_mask)
    if strategy == "auto" and cspec.scrub and n_censored > cspec.max_censored_fraction * n_scans:
        model.warnings.append(
            f"sub-{run.subject} {run.confounds}: censoring would remove {n_censored} of {n_scans} "
            f"volumes (> {cspec.max_censored_fraction:g}); the run is kept uncensored with its motion "
            "regressors (set first_level.confounds.strategy explicitly to censor anyway)")
        confounds, sample_mask = load_run_confounds(run, cspec, n_scans, scrub=False)
        n_censored = 0 if sample_mask is None else n_scans - len(sample_mask)
        model.censoring = False
    else:
        model.censoring = bool(cspec.scrub)
    if strategy == "auto":
        full = confounds is not None and "trans_x_derivative1" in confounds.columns
        strategy = choose_motion_model(n_scans, n_task, n_drift, n_censored,
                                       budget=cspec.max_nuisance_fraction) if full else "motion6"
        if strategy == "motion6" and confounds is not None:
            confounds = confounds[[c for c in confounds.columns if c in MOTION6]]
    model.confounds, model.sample_mask, model.strategy = confounds, sample_mask, strategy
    model.n_censored = n_censored
    return model


def load_run_confounds(run: Run, cspec: ConfoundsSpec, n_scans: int, *,
                       strategy: str | None = None, scrub: bool | None = None,
                       ) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """Nuisance regressors and sample mask of a run via nilearn's ``load_confounds``.

    ``load_confounds`` finds the confounds file from the BOLD file's name, so the
    run's files are staged under fMRIPrep names in a temporary folder (symlinks),
    whatever they are called on disk. ``strategy`` / ``scrub`` override the
    spec's (see :func:`confounds_kwargs`); the TSV's ``cosine*`` columns are
    never returned.

    Returns
    -------
    confounds : DataFrame or None
        Demeaned regressors (``None`` if the run has no confounds file or the
        strategy selects none).
    sample_mask : array of int or None
        Indices of the volumes kept (``None``: all).

    Raises
    ------
    InputError
        Unreadable confounds, wrong length, or columns the strategy needs missing.
    """
    if run.confounds is None:
        return None, None
    path = Path(run.confounds)
    try:
        columns = pd.read_csv(path, sep="\t", nrows=0).columns.tolist()
        n_rows = sum(1 for _ in open(path)) - 1
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read confounds file: {exc}", subject=run.subject, path=path) from exc
    if n_rows != n_scans:
        raise InputError(f"confounds file has {n_rows} rows but the BOLD run has {n_scans} volumes",
                         subject=run.subject, path=path)
    kwargs = confounds_kwargs(cspec, columns, strategy=strategy, scrub=scrub)
    if not kwargs["strategy"]:
        return None, None
    with tempfile.TemporaryDirectory(prefix="fmri-pain-confounds-") as tmp:
        stem = "_".join(f"{k}-{v}" for k, v in run.entities.items())
        bold = Path(tmp) / f"{stem}_desc-preproc_bold.nii.gz"
        os.symlink(Path(run.bold).resolve(), bold)
        os.symlink(path.resolve(), Path(tmp) / f"{stem}_desc-confounds_timeseries.tsv")
        sidecar = path.with_name(path.name[: -len(".tsv")] + ".json") if path.name.endswith(".tsv") else None
        if sidecar is not None and sidecar.exists():
            os.symlink(sidecar.resolve(), Path(tmp) / f"{stem}_desc-confounds_timeseries.json")
        try:
            from nilearn.interfaces.fmriprep import load_confounds

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                confounds, sample_mask = load_confounds(str(bold), demean=True, **kwargs)
        except (ValueError, KeyError, OSError) as exc:
            raise InputError(f"cannot load confounds ({kwargs['strategy']}): {exc}",
                             subject=run.subject, path=path) from exc
    if confounds is not None:
        confounds = confounds[[c for c in confounds.columns if not c.startswith(HIGH_PASS_PREFIX)]]
        if confounds.shape[1] == 0:
            confounds = None
    if sample_mask is not None:
        sample_mask = np.asarray(sample_mask, dtype=int)
        if len(sample_mask) == n_scans:
            sample_mask = None
    return confounds, sample_mask
