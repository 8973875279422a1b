"""Run-level design: events, confounds (nilearn ``load_confounds``), design matrices, contrast vectors.

The regressor of interest is the ON trial type (``spec.events.on_trial_type``); every other
trial type in ``events.tsv`` is modelled as a nuisance regressor. Contrasts are
first written as weights over *trial types* and then expanded to design columns,
so the same expression works for every HRF model (``on`` and
``on_derivative`` columns, or ``on_delay_0`` ... ``on_delay_5`` for FIR).

One high-pass model per design: the spec's ``drift_model`` / ``high_pass`` (nilearn's
drift regressors ``drift_1`` ...) is the only drift basis. The confounds TSV's
``cosine*`` columns (fMRIPrep's DCT basis at its fixed 128 s cut-off, and this
project's preprocessing writes the same) are never added to the design, so the
cut-off the spec states is the one applied; they are recorded as unused.

The nuisance model's cost is counted against the run's degrees of freedom
(:func:`nuisance_dof`); ``strategy: auto`` (:func:`choose_motion_model`) picks
the motion expansion the run can afford.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix

from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.errors import InputError
from fmri_pain.bids.runs import Run
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import ConfoundsSpec, FirstLevelSpec
from fmri_pain.confound_names import MOTION as MOTION6

BASELINE_TRIAL_TYPES = ("off", "rest", "baseline", "fixation")
"""Trial types read as baseline when the ON trial type is absent (one-condition studies)."""

SCRUB_MIN_SEGMENT = 5
"""nilearn's ``scrub``: kept segments shorter than this many volumes are censored too (Power et al. 2014)."""

N_MOTION = {"motion24": 24, "motion6": 6, "acompcor": 24, "none": 0}
"""Motion regressors of each explicit confounds strategy."""

HIGH_PASS_PREFIX = "cosine"
"""Prefix of the confounds TSV's DCT high-pass columns (fMRIPrep ``cosine00`` ...)."""

LOGGER = logging.getLogger(__name__)


def read_events(path: Path | str | None, subject: str | None = None,
                default_trial_type: str = "on") -> pd.DataFrame:
    """Read ``events.tsv`` into ``onset``, ``duration``, ``trial_type`` (+ ``modulation``).

    A file without ``trial_type`` is one condition, ``default_trial_type``
    (the ON trial type). Rows with a missing onset are dropped.

    Raises
    ------
    InputError
        Missing/unreadable file, missing ``onset``/``duration`` columns, or no events.
    """
    if path is None:
        raise InputError("run has no events.tsv", subject=subject)
    try:
        with warnings.catch_warnings():
            # index_col=False: a first row longer than the header is an error, not an index column
            warnings.simplefilter("error", pd.errors.ParserWarning)
            events = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True, index_col=False)
    except pd.errors.ParserWarning as exc:
        raise InputError("cannot read events file: line 2 has more fields than the header",
                         subject=subject, path=path) from exc
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read events file: {' '.join(str(exc).split())}",
                         subject=subject, path=path) from exc
    missing = {"onset", "duration"} - set(events.columns)
    if missing:
        raise InputError(f"events file lacks column(s) {sorted(missing)}", subject=subject, path=path)
    if "trial_type" not in events.columns:
        events["trial_type"] = default_trial_type
    events = events.dropna(subset=["onset"])
    events["trial_type"] = events["trial_type"].fillna("n/a").astype(str)
    events["duration"] = pd.to_numeric(events["duration"], errors="coerce").fillna(0.0)
    try:
        events["onset"] = events["onset"].astype(float)
    except ValueError as exc:
        raise InputError(f"non-numeric onset: {exc}", subject=subject, path=path) from exc
    if events.empty:
        raise InputError("events file has no events", subject=subject, path=path)
    cols = ["onset", "duration", "trial_type"] + (["modulation"] if "modulation" in events else [])
    return events[cols].reset_index(drop=True)


def stim_weights(trial_types: list[str], events_spec: EventsSpec) -> dict[str, float]:
    """Weights over trial types of the ``stim`` contrast (ON > OFF or ON > baseline).

    If ``events_spec.on_trial_type`` is a trial type: ON (minus OFF when
    ``off_trial_type`` is set and present). Otherwise (a one-condition study
    with other event names) the mean of the non-baseline trial types, minus
    the mean of baseline-like trial types (``off``/``rest``/``baseline``/
    ``fixation`` or ``events_spec.off_trial_type``) if any.
    """
    types = list(dict.fromkeys(trial_types))
    on, off = events_spec.on_trial_type, events_spec.off_trial_type
    if on in types:
        weights = {on: 1.0}
        if off is not None and off in types:
            weights[off] = -1.0
        return weights
    baseline_names = {b.lower() for b in BASELINE_TRIAL_TYPES} | ({off.lower()} if off else set())
    active = [t for t in types if t.lower() not in baseline_names]
    rest = [t for t in types if t.lower() in baseline_names]
    if not active:
        raise ValueError(f"no active trial type among {types}")
    weights = {t: 1.0 / len(active) for t in active}
    weights.update({t: -1.0 / len(rest) for t in rest})
    return weights


def expression_weights(expression: str, trial_types: list[str]) -> dict[str, float]:
    """Weights over trial types of a contrast expression, e.g. ``"F1 + F2 - N1 - N2"``.

    The expression is parsed by :func:`fmri_pain.config.contrast_expressions.parse_contrast`
    (trial-type names, numbers, ``+ - * /``, parentheses; linear), never
    evaluated; the result equals nilearn's ``expression_to_contrast_vector``
    on the same trial types.

    Raises
    ------
    ContrastExpressionError
        If the expression is outside the grammar or not linear (a ``ValueError``).
    ValueError
        If the expression names a trial type the run does not have.
    """
    weights = parse_contrast(expression)
    types = list(dict.fromkeys(trial_types))
    missing = [name for name in weights if name not in types]
    if missing:
        found = ", ".join(types[:10]) + (f" +{len(types) - 10} more" if len(types) > 10 else "")
        raise ValueError(f"trial type(s) {', '.join(map(repr, missing))} not among the run's "
                         f"trial types ({found})")
    return {t: weights[t] for t in types if weights.get(t, 0.0) != 0}


def contrast_vector(weights: Mapping[str, float], columns: list[str]) -> np.ndarray:
    """Expand trial-type weights to a contrast over design columns.

    The main (canonical) regressor of a trial type carries its weight; HRF
    derivative columns get 0; FIR delay columns share it (the mean response).

    Raises
    ------
    ValueError
        If a weighted trial type has no column.
    """
    columns = list(columns)
    vector = np.zeros(len(columns))
    for trial_type, weight in weights.items():
        if trial_type in columns:
            vector[columns.index(trial_type)] += weight
            continue
        delays = [i for i, c in enumerate(columns) if c.startswith(f"{trial_type}_delay_")]
        if not delays:
            raise ValueError(f"trial type {trial_type!r} has no regressor in the design {columns}")
        vector[delays] += weight / len(delays)
    return vector


def frame_times(n_scans: int, tr: float, slice_time_ref: float = 0.0) -> np.ndarray:
    """Acquisition times of the scans, as ``FirstLevelModel`` builds them."""
    return np.linspace(slice_time_ref * tr, (n_scans - 1 + slice_time_ref) * tr, n_scans)


def slice_time_reference(metadata: dict, tr: float, configured: float | None = None) -> float:
    """Fraction of the TR at which each volume is sampled after slice-timing correction.

    ``configured`` wins; otherwise fMRIPrep's convention: ``StartTime / TR`` for
    data whose sidecar says ``SliceTimingCorrected``, else 0 (nilearn's default).
    """
    if configured is not None:
        return float(configured)
    if metadata.get("SliceTimingCorrected") and metadata.get("StartTime") is not None:
        return float(np.clip(float(metadata["StartTime"]) / tr, 0.0, 1.0))
    return 0.0


def make_run_design(n_scans: int, tr: float, events: pd.DataFrame,
                    confounds: pd.DataFrame | None, spec: FirstLevelSpec,
                    slice_time_ref: float = 0.0, *, subject: str | None = None,
                    events_path: Path | str | None = None,
                    messages: list[str] | None = None) -> pd.DataFrame:
    """The run's design matrix (all scans; censoring drops rows afterwards).

    Same call as :class:`nilearn.glm.first_level.FirstLevelModel` makes
    (``min_onset=-24``), with the frame times shifted by ``slice_time_ref``.
    The spec's drift model is the design's only high-pass basis: a confound
    column named ``cosine*`` is refused.

    nilearn's "Duplicated events" warning (identical rows, e.g. every event at
    onset 0) is re-issued naming ``subject`` and ``events_path``: appended to
    ``messages`` when given (the caller logs and records them), else logged.

    Raises
    ------
    ValueError
        If ``confounds`` holds a ``cosine*`` column while a drift model is set.
    """
    drift = None if spec.drift_model == "none" else spec.drift_model
    conf_values = conf_names = None
    if confounds is not None and confounds.shape[1]:
        conf_values, conf_names = confounds.to_numpy(), confounds.columns.tolist()
        cosines = [c for c in conf_names if c.startswith(HIGH_PASS_PREFIX)]
        if cosines and drift is not None:
            raise ValueError(f"two high-pass bases: confounds {cosines} and the {drift} drift model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        design = make_first_level_design_matrix(
            frame_times(n_scans, tr, slice_time_ref), events, hrf_model=spec.hrf_model, drift_model=drift,
            high_pass=spec.high_pass, fir_delays=list(spec.fir_delays),
            add_regs=conf_values, add_reg_names=conf_names,
        )
    for w in caught:
        text = str(w.message)
        if text.startswith("Duplicated events"):
            where = " ".join(x for x in (f"sub-{subject}" if subject else None,
                                         str(events_path) if events_path else None) if x)
            message = (f"{where}: duplicated events (same trial_type, onset and duration); nilearn "
                       "sums their amplitudes into one event. Check the events file.")
            if messages is not None:
                messages.append(message)
            else:
                LOGGER.warning(message)
        # events outside the scan window are expected for truncated runs
        elif not any(k in text for k in ("outside", "did not find", "Matrix is singular")):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return design


def design_column_kinds(columns: Sequence[str], confound_names: Sequence[str] = ()) -> dict[str, str]:
    """Kind of each design column: ``task``, ``motion``, ``drift``, ``other`` (confounds) or ``constant``.

    ``drift`` columns are nilearn's (``drift_1`` ...) and any ``cosine*`` column,
    so a test can check that a design has one high-pass basis.
    """
    confound_names = set(confound_names)
    kinds = {}
    for c in columns:
        if c == "constant":
            kinds[c] = "constant"
        elif c.startswith("drift_") or c.startswith(HIGH_PASS_PREFIX):
            kinds[c] = "drift"
        elif c in confound_names:
            kinds[c] = "motion" if c.startswith(MOTION6) else "other"
        else:
            kinds[c] = "task"
    return kinds


def high_pass_bases(columns: Sequence[str]) -> list[str]:
    """The drift bases present in a design: ``"drift"`` (nilearn's) and/or ``"cosine"`` (a TSV's)."""
    bases = []
    if any(c.startswith("drift_") for c in columns):
        bases.append("drift")
    if any(c.startswith(HIGH_PASS_PREFIX) for c in columns):
        bases.append("cosine")
    return bases


def nuisance_dof(columns: Sequence[str], confound_names: Sequence[str], n_scans: int,
                 n_censored: int, residual_dof: float) -> dict[str, float | int]:
    """Degrees-of-freedom account of a run's nuisance model (sidecar keys).

    The run's degrees of freedom are its volumes less the task regressors and the
    constant (what a model without nuisance terms would leave); the nuisance model
    takes one per motion, drift and other confound column and one per censored
    volume (censoring removes the volume, as a spike regressor would).

    Parameters
    ----------
    columns : sequence of str
        Design columns.
    confound_names : sequence of str
        Which of them came from the confounds TSV.
    n_scans : int
        Volumes of the run before censoring.
    n_censored : int
        Volumes censored (including non-steady-state volumes).
    residual_dof : float
        Volumes kept minus the design's rank.

    Returns
    -------
    dict
        ``NuisanceRegressors`` (``Motion``, ``Drift``, ``Other``, ``CensoredVolumes``),
        ``TaskRegressors``, ``RunDegreesOfFreedom``, ``NuisanceDegreesOfFreedom``,
        ``NuisanceDofFraction``, ``ResidualDegreesOfFreedom``.
    """
    kinds = list(design_column_kinds(columns, confound_names).values())
    counts = {k: kinds.count(k) for k in ("task", "motion", "drift", "other")}
    available = n_scans - counts["task"] - 1
    taken = counts["motion"] + counts["drift"] + counts["other"] + int(n_censored)
    return {
        "NuisanceRegressors": {"Motion": counts["motion"], "Drift": counts["drift"],
                               "Other": counts["other"], "CensoredVolumes": int(n_censored)},
        "TaskRegressors": counts["task"],
        "RunDegreesOfFreedom": int(available),
        "NuisanceDegreesOfFreedom": int(taken),
        "NuisanceDofFraction": round(taken / available, 4) if available > 0 else 1.0,
        "ResidualDegreesOfFreedom": float(residual_dof),
    }


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
