"""Run-level design matrices (nilearn's), their columns' account, and contrast vectors over them.

One high-pass model per design: the spec's ``drift_model`` / ``high_pass`` (nilearn's
drift regressors ``drift_1`` ...) is the only drift basis. The confounds TSV's
``cosine*`` columns (fMRIPrep's DCT basis at its fixed 128 s cut-off, and this
project's preprocessing writes the same) are never added to the design, so the
cut-off the spec states is the one applied; they are recorded as unused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix

from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.glm.first_level.confounds import HIGH_PASS_PREFIX, MOTION6, NuisanceModel

LOGGER = logging.getLogger(__name__)


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
