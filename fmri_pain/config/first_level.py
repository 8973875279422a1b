"""The ``first_level`` section: run-level GLM settings and the nuisance (confound) model."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

import pydantic
from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

from fmri_pain.config.contrast_expressions import ContrastExpressionError, parse_contrast
from fmri_pain.config.fields import LABEL_RE, bounded, shown, spec_dataclass

HRF_MODEL = Literal["spm", "spm + derivative", "spm + derivative + dispersion",  # = fields.HRF_MODELS
                    "glover", "glover + derivative", "fir"]
"""The HRF bases of nilearn a design may use."""


@spec_dataclass
class ConfoundsSpec:
    """Nuisance regressors from the fMRIPrep-style confounds TSV."""

    strategy: Literal["motion24", "motion6", "acompcor", "none", "auto"] = "auto"
    """``motion24``: 6 motion parameters + derivatives + squares; ``acompcor``: motion24 + 6 aCompCor;
    ``auto``: per run, motion24 when the nuisance model then stays within ``max_nuisance_fraction`` of
    the run's degrees of freedom, else motion6 (see ``fmri_pain.glm.first_level.confounds.choose_motion_model``)."""
    scrub: StrictBool = True
    """Censor high-motion volumes (true censoring through ``sample_masks``); with ``strategy: auto``
    only while at most ``max_censored_fraction`` of the run's volumes would be censored."""
    max_nuisance_fraction: StrictFloat = bounded(0.25, 0, 1, lo_open=True)
    """Fraction of a run's degrees of freedom (volumes minus task regressors and constant) the nuisance
    model (motion, drift, other confounds, censored volumes) may take: the budget of ``auto`` and the
    level above which every strategy gets a reported warning."""
    max_censored_fraction: StrictFloat = bounded(0.2, 0, 1, lo_open=True)
    """With ``strategy: auto``, a run whose censoring would remove more than this fraction of its
    volumes is not censored but kept with its motion regressors and a reported warning (cf. the
    stringent exclusion criterion of Parkes et al. 2018: more than 20 % of volumes with high FD)."""
    fd_threshold: StrictFloat = bounded(0.5, 0, 100, lo_open=True, unit="mm")
    """Framewise displacement (mm) above which a volume is censored."""
    std_dvars_threshold: StrictFloat = bounded(1.5, 0, 100, lo_open=True)
    """Standardised DVARS above which a volume is censored."""
    n_acompcor: StrictInt = bounded(6, 1, 100)
    """Number of aCompCor components with ``strategy: acompcor``."""


@spec_dataclass
class FirstLevelSpec:
    """Run-level GLM settings (nilearn ``FirstLevelModel`` semantics)."""

    hrf_model: HRF_MODEL = "spm"
    """HRF basis convolved with the ON blocks (nilearn names); ``fir`` uses ``fir_delays``."""
    fir_delays: tuple[Annotated[StrictInt, bounded(lo=0, hi=100, unit="scans (each)")], ...] = (0, 1, 2, 3, 4, 5)
    """Delays (in scans) of the FIR basis with ``hrf_model: fir``."""
    noise_model: Literal["ar1", "ols"] = "ar1"
    """Serial-correlation model of the run GLM (AR(1) with nilearn's binning of rho, or OLS)."""
    drift_model: Literal["cosine", "polynomial", "none"] = "cosine"
    """Slow-drift regressors of the run GLM."""
    high_pass: StrictFloat = bounded(1.0 / 128, 0.0001, 1, unit="Hz")
    """High-pass cut-off in Hz for the cosine drift basis (1/128 s)."""
    slice_time_ref: StrictFloat | None = bounded(None, 0, 1)
    """Sampling time of each volume as a fraction of the TR; null: ``StartTime / TR`` of
    slice-time-corrected data (fMRIPrep's convention), else 0."""
    smoothing_fwhm: StrictFloat | None = bounded(6.0, 0, 30, unit="mm")
    """Gaussian smoothing kernel in mm (null: none)."""
    confounds: ConfoundsSpec = field(default_factory=ConfoundsSpec)
    contrasts: dict[StrictStr, StrictStr] = field(default_factory=dict)
    """Further run-level contrasts: name (a BIDS label, not a built-in contrast name) -> linear
    expression over trial types: trial-type names, numbers, ``+ - * /`` and parentheses, e.g.
    ``(face + house) / 2 - scrambled``. Parsed, never evaluated, when the spec is loaded; a run
    without a trial type its expression names is an input error naming the run's events file,
    found when the dataset is validated (before any fit)."""

    @pydantic.model_validator(mode="after")
    def _check_contrasts(self) -> FirstLevelSpec:
        for name, expression in self.contrasts.items():
            if not LABEL_RE.fullmatch(name):
                raise ValueError(f"first_level.contrasts: contrast name {shown(name)} must be letters and "
                                 "digits only (it becomes the BIDS contrast- label)")
            try:
                parse_contrast(expression)
            except ContrastExpressionError as exc:
                raise ValueError(f"first_level.contrasts.{name} = {shown(expression)}: {exc}") from None
        return self
