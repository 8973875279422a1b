"""Run-level design: events, confounds (nilearn ``load_confounds``), design matrices, contrast vectors.

The regressor of interest is the ON trial type (``spec.events.on_trial_type``); every other
trial type in ``events.tsv`` is modelled as a nuisance regressor. Contrasts are
first written as weights over *trial types* and then expanded to design columns,
so the same expression works for every HRF model (``on`` and
``on_derivative`` columns, or ``on_delay_0`` ... ``on_delay_5`` for FIR).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix

from fmri_pain.contrast_expressions import parse_contrast
from fmri_pain.errors import InputError
from fmri_pain.layout import Run
from fmri_pain.spec import ConfoundsSpec, EventsSpec, FirstLevelSpec

BASELINE_TRIAL_TYPES = ("off", "rest", "baseline", "fixation")
"""Trial types read as baseline when the ON trial type is absent (one-condition studies)."""

SCRUB_MIN_SEGMENT = 5
"""nilearn's ``scrub``: kept segments shorter than this many volumes are censored too (Power et al. 2014)."""


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

    The expression is parsed by :func:`fmri_pain.contrast_expressions.parse_contrast`
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
                    slice_time_ref: float = 0.0) -> pd.DataFrame:
    """The run's design matrix (all scans; censoring drops rows afterwards).

    Same call as :class:`nilearn.glm.first_level.FirstLevelModel` makes
    (``min_onset=-24``), with the frame times shifted by ``slice_time_ref``.
    """
    drift = None if spec.drift_model == "none" else spec.drift_model
    conf_values = conf_names = None
    if confounds is not None and confounds.shape[1]:
        conf_values, conf_names = confounds.to_numpy(), confounds.columns.tolist()
    with warnings.catch_warnings():
        # events outside the scan window are expected for truncated runs
        warnings.filterwarnings("ignore", message=".*(outside|did not find|Matrix is singular).*")
        return make_first_level_design_matrix(
            frame_times(n_scans, tr, slice_time_ref), events, hrf_model=spec.hrf_model, drift_model=drift,
            high_pass=spec.high_pass, fir_delays=list(spec.fir_delays),
            add_regs=conf_values, add_reg_names=conf_names,
        )


def confounds_kwargs(cspec: ConfoundsSpec, columns: list[str]) -> dict:
    """``load_confounds`` arguments for a confounds strategy and the TSV's columns."""
    strategy: list[str] = []
    kwargs: dict = {}
    if cspec.strategy != "none":
        strategy.append("motion")
        kwargs["motion"] = "basic" if cspec.strategy == "motion6" else "full"
        if any(c.startswith("cosine") for c in columns):
            strategy.append("high_pass")
        if cspec.strategy == "acompcor":
            strategy.append("compcor")
            kwargs.update(compcor="anat_combined", n_compcor=cspec.n_acompcor)
    if cspec.scrub:
        strategy.append("scrub")
        kwargs.update(scrub=SCRUB_MIN_SEGMENT, fd_threshold=cspec.fd_threshold,
                      std_dvars_threshold=cspec.std_dvars_threshold)
    kwargs["strategy"] = tuple(strategy)
    return kwargs


def load_run_confounds(run: Run, cspec: ConfoundsSpec, n_scans: int
                       ) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """Nuisance regressors and sample mask of a run via nilearn's ``load_confounds``.

    ``load_confounds`` finds the confounds file from the BOLD file's name, so the
    run's files are staged under fMRIPrep names in a temporary folder (symlinks),
    whatever they are called on disk.

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
    kwargs = confounds_kwargs(cspec, columns)
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
        if confounds.shape[1] == 0:
            confounds = None
    if sample_mask is not None:
        sample_mask = np.asarray(sample_mask, dtype=int)
        if len(sample_mask) == n_scans:
            sample_mask = None
    return confounds, sample_mask
