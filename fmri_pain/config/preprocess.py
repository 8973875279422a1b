"""Preprocessing options (the ``preprocess`` section of the analysis spec)."""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Annotated, Any, Literal

import pydantic
from pydantic import StrictBool, StrictFloat, StrictInt

from fmri_pain.config.fields import bounded, key_error, no_bool, shown, spec_dataclass

BACKENDS = ("python",)
REGISTRATIONS = ("rigid", "affine", "syn")
PLUGINS = ("Linear", "MultiProc")

#: Name of the output space: the template registered to, nilearn's bundled ICBM 2009a symmetric T1
#: (``fmri_pain.bids.derivatives.SPACE``, where the evidence is given).
TEMPLATE = "MNI152NLin2009aSym"


def _auto_or_count(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise key_error("must be a finite number, got {value}", value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise key_error("must be a string or a number ('auto' or a count of volumes), got {value}", value)
    if value != "auto" and not isinstance(value, int):
        raise key_error("= {value} must be 'auto' or a count of volumes", value)
    return value


def _hz_not_seconds(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 1:
        raise key_error(f"= {{value}} is a period in seconds, but the key is in Hz now (as "
                        f"first_level.high_pass): write {1 / value:.6g} (1/{value:g} Hz)", value)
    return value


@spec_dataclass
class PreprocessSpec:
    """Options of the preprocessing stage.

    Parameters
    ----------
    backend : {"python"}
        ``python`` needs nothing but PyPI packages (numpy/scipy realignment,
        antspyx registration). FSL / ANTs command-line backends are not
        implemented yet, so they are rejected here rather than half-run.
    dummy_scans : "auto" or int
        Non-steady-state volumes at the start of each run.  ``"auto"`` detects
        them like fMRIPrep (nipype's ``is_outlier`` on the global signal).  The
        volumes are never dropped: they are flagged as
        ``non_steady_state_outlierNN`` confound columns, so event onsets stay valid.
    slice_timing : bool
        Correct slice timing when the run's sidecar has ``SliceTiming``.
    registration : {"rigid", "affine", "syn"}
        Anatomical (or mean-EPI when no T1w exists) to MNI normalization model.
    bold_to_t1 : {"rigid", "affine"}
        EPI reference to T1w coregistration model.
    registration_resolution : float
        Grid (mm) of the nilearn template used as the registration target
        (3 mm: ~0.3 mm accuracy at a third of the 2 mm cost).  Outputs are
        always written at the BOLD resolution.
    plugin : {"Linear", "MultiProc"}
        Nipype execution plugin.
    n_procs, memory_gb : int, float
        Resources handed to the MultiProc plugin.
    n_acompcor : int or float
        Number of aCompCor components, or (0-1) the fraction of variance to
        explain (fMRIPrep writes the components that explain 50%).
    n_tcompcor : int or float
        Number of tCompCor components, or the fraction of variance to explain.
    fd_threshold, dvars_threshold : float
        Thresholds (mm, standardized DVARS) for ``motion_outlierNN`` columns.
    high_pass : float
        Cut-off frequency (Hz) of the ``cosineNN`` regressors (1/128 Hz: a 128 s period), the
        unit of ``first_level.high_pass``; a value of 1 or more is an old period in seconds and
        an error that gives the value in Hz.
    realign_iterations : int
        Gauss-Newton iterations per volume (python backend).
    interpolation_order : int
        Spline order of the one-shot resampling into MNI space.
    """

    backend: Literal["python"] = "python"
    dummy_scans: Annotated[Literal["auto"] | Annotated[StrictInt, bounded(lo=0, hi=1000, unit="volumes")],
                           pydantic.BeforeValidator(_auto_or_count)] = "auto"
    slice_timing: StrictBool = True
    registration: Literal["rigid", "affine", "syn"] = "affine"
    bold_to_t1: Literal["rigid", "affine"] = "rigid"
    registration_resolution: StrictFloat = bounded(3.0, 1, 6, unit="mm")
    plugin: Literal["Linear", "MultiProc"] = "Linear"
    n_procs: StrictInt = bounded(1, 1, 1024)
    memory_gb: StrictFloat = bounded(4.0, 0, 4096, lo_open=True, unit="GB")
    n_acompcor: StrictFloat = bounded(0.5, 0, 1000, lo_open=True)
    n_tcompcor: StrictFloat = bounded(0.5, 0, 1000, lo_open=True)
    fd_threshold: StrictFloat = bounded(0.5, 0, 100, lo_open=True, unit="mm")
    dvars_threshold: StrictFloat = bounded(1.5, 0, 100, lo_open=True)
    high_pass: Annotated[StrictFloat, pydantic.BeforeValidator(_hz_not_seconds)] = bounded(
        1.0 / 128, 0, 1, lo_open=True, hi_open=True, unit="Hz")
    realign_iterations: StrictInt = bounded(12, 1, 1000)
    interpolation_order: Annotated[Literal[0, 1, 3, 5], pydantic.BeforeValidator(no_bool)] = 3

    @pydantic.model_validator(mode="after")
    def _check_components(self) -> PreprocessSpec:
        for key in ("n_acompcor", "n_tcompcor"):
            v = getattr(self, key)
            if not (0 < v < 1 or (float(v).is_integer() and v >= 1)):
                raise ValueError(f"preprocess.{key} = {shown(v)} must be a fraction in (0, 1) or an integer >= 1")
        return self

    @property
    def high_pass_period(self) -> float:
        """The cut-off period in seconds (``1 / high_pass``), as the confounds stage takes it."""
        return 1.0 / self.high_pass

    @classmethod
    def from_dict(cls, data: dict | None) -> "PreprocessSpec":
        """Build from a mapping (e.g. the YAML ``preprocess:`` section); unknown keys are errors."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocess option(s): {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
