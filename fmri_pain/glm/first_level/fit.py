"""One run's fit: BOLD, design, nuisance model, AR(1) GLM, contrast maps over the run's mask."""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fmri_pain.bids import derivatives as drv
from fmri_pain.bids.runs import Run
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.errors import InputError
from fmri_pain.glm.first_level import timing
from fmri_pain.glm.first_level.bold import bold_volumes, drop_constant_voxels, load_masked_bold
from fmri_pain.glm.first_level.confounds import run_nuisance_model
from fmri_pain.glm.first_level.design_plot import DesignPlot
from fmri_pain.glm.first_level.design import (
    contrast_vector,
    design_column_kinds,
    make_run_design,
    run_model_record,
    slice_time_reference,
)
from fmri_pain.glm.first_level.events import contrast_weights, read_events
from fmri_pain.glm.first_level.fixed_effects import EffectMaps
from fmri_pain.glm.first_level.model import ar1_glm

LOGGER = logging.getLogger(__name__)


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
    design_plot: DesignPlot | None = None
    """The design's PNG being drawn in a thread (thread budget above 1), else None."""


def checksum_inputs_meanwhile(run: Run) -> threading.Thread:
    """Start hashing the run's input files in a thread (warms ``sha256_file``'s cache).

    The provenance of every output checksums the inputs (73 ms for a 60 MB
    BOLD); hashlib releases the GIL, so with a thread budget above 1 this runs
    during the single-threaded design step. Errors are left to the provenance,
    which reads the files again and reports them.
    """
    def work() -> None:
        for path in (run.bold, run.events, run.confounds, run.mask):
            if path is not None:
                try:
                    drv.sha256_file(path)
                except OSError:
                    pass

    thread = threading.Thread(target=work, name="first-level-checksums", daemon=True)
    thread.start()
    return thread


def fit_run(run: Run, first_level: FirstLevelSpec, events_spec: EventsSpec, min_volumes: int,
            threads: int = 1, plot_design: bool = False) -> RunFit:
    """Fit one run: design, confounds, censoring; load + smooth + mask; AR(1) GLM, contrasts.

    Parameters
    ----------
    run : Run
    first_level : FirstLevelSpec
        Design, noise model, smoothing, nuisance model and extra contrasts.
    events_spec : EventsSpec
        The ON / OFF trial types (the ``stim`` contrast).
    min_volumes : int
        Fewest volumes a run may keep after censoring.
    threads : int
        Thread budget of the smoothing and the GLM (the worker's threads).
    plot_design : bool
        With ``threads > 1``, draw the design's PNG in a thread while the BOLD is
        read and fitted (:attr:`RunFit.design_plot`); otherwise it is drawn when written.

    Returns
    -------
    RunFit

    Raises
    ------
    InputError
        Unreadable inputs, too few volumes after censoring.
    """
    fl = first_level
    try:
        tr = run.tr
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("RepetitionTime missing from the BOLD metadata",
                         subject=run.subject, path=run.bold) from exc
    events = read_events(run.events, run.subject, default_trial_type=events_spec.on_trial_type)
    n_scans = bold_volumes(run.bold, run.subject)
    hasher = checksum_inputs_meanwhile(run) if threads > 1 else None
    messages: list[str] = []
    # the design needs only the header's volume count: it is built (and its plot started)
    # before the BOLD is read
    t_design = timing.clocks()  # design + nuisance model + censoring
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
    timing.add("design", t_design)
    n_kept = design.shape[0]
    if n_kept < max(min_volumes, design.shape[1] + 1):
        raise InputError(f"only {n_kept} of {n_scans} volumes left after censoring "
                         f"(minimum {min_volumes}, {design.shape[1]} regressors)",
                         subject=run.subject, path=run.confounds or run.bold)
    plot = DesignPlot(design) if plot_design and threads > 1 else None
    # censored volumes are never smoothed nor held
    Y, mask, affine = load_masked_bold(run.bold, run.mask, fl.smoothing_fwhm, run.subject,
                                     threads=threads, volumes=sample_mask)
    Y, mask, constant = drop_constant_voxels(Y, mask, run)
    if constant:
        messages.append(constant)
    with timing.step("fit", process_cpu=threads > 1):
        results = ar1_glm(Y, design.to_numpy(), noise_model=fl.noise_model, signal_scaling=True,
                         threads=threads)
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
    weights = contrast_weights(trial_types, events_spec, fl.contrasts, run)
    with timing.step("contrasts"):
        contrasts = {name: results.contrast(contrast_vector(w, columns))
                     for name, w in weights.items()}
    if hasher is not None:
        hasher.join()
    return RunFit(run=run, mask=mask, affine=affine, design=design, contrasts=contrasts,
                  weights=weights, n_volumes=n_scans, n_censored=n_scans - n_kept,
                  dof=results.df_residuals, model=model, warnings=messages, design_plot=plot)
