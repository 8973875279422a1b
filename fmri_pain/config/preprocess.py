"""Preprocessing options (the ``preprocess`` section of the analysis spec)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

BACKENDS = ("python",)
REGISTRATIONS = ("rigid", "affine", "syn")
PLUGINS = ("Linear", "MultiProc")

#: Name of the output space: the template registered to, nilearn's bundled ICBM 2009a symmetric T1
#: (``fmri_pain.bids.derivatives.SPACE``, where the evidence is given).
TEMPLATE = "MNI152NLin2009aSym"


@dataclass(frozen=True)
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
        Cut-off period (s) of the ``cosineNN`` regressors.
    realign_iterations : int
        Gauss-Newton iterations per volume (python backend).
    interpolation_order : int
        Spline order of the one-shot resampling into MNI space.
    """

    backend: str = "python"
    dummy_scans: Any = "auto"
    slice_timing: bool = True
    registration: str = "affine"
    bold_to_t1: str = "rigid"
    registration_resolution: float = 3.0
    plugin: str = "Linear"
    n_procs: int = 1
    memory_gb: float = 4.0
    n_acompcor: float = 0.5
    n_tcompcor: float = 0.5
    fd_threshold: float = 0.5
    dvars_threshold: float = 1.5
    high_pass: float = 128.0
    realign_iterations: int = 12
    interpolation_order: int = 3

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"preprocess.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.registration not in REGISTRATIONS:
            raise ValueError(
                f"preprocess.registration must be one of {REGISTRATIONS}, got {self.registration!r}"
            )
        if self.bold_to_t1 not in ("rigid", "affine"):
            raise ValueError(f"preprocess.bold_to_t1 must be 'rigid' or 'affine', got {self.bold_to_t1!r}")
        if self.plugin not in PLUGINS:
            raise ValueError(f"preprocess.plugin must be one of {PLUGINS}, got {self.plugin!r}")
        if not (self.dummy_scans == "auto" or (isinstance(self.dummy_scans, int) and self.dummy_scans >= 0)):
            raise ValueError(f"preprocess.dummy_scans must be 'auto' or an integer >= 0, got {self.dummy_scans!r}")
        # numeric ranges (registration_resolution, n_procs, memory_gb, ...) are declared once,
        # in fmri_pain.config.spec.SECTION_RANGES, and checked when the spec is loaded
        for key in ("n_acompcor", "n_tcompcor"):
            v = getattr(self, key)
            if not (0 < v < 1 or (float(v).is_integer() and v >= 1)):
                raise ValueError(f"preprocess.{key} must be a fraction in (0, 1) or an integer >= 1, got {v!r}")
        if self.interpolation_order not in (0, 1, 3, 5):
            raise ValueError("preprocess.interpolation_order must be 0, 1, 3 or 5")

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
