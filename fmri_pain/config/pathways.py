"""Parameters of the pain-pathway analysis (embedded as ``spec.pathways``)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

from fmri_pain.config.fields import bounded, spec_dataclass
from fmri_pain.config.first_level import HRF_MODEL, FirstLevelSpec
from fmri_pain.confound_names import CONNECTIVITY_CONFOUNDS

ATLAS_FILENAME = "pain_pathways.tsv"


def atlas_path() -> Path:
    """The shipped pain-pathway atlas TSV.

    Looks in the source tree (``<repo>/atlases``) first, then in the installed
    package (``fmri_pain/atlases``: pyproject maps ``atlases/`` there).
    """
    package_dir = Path(__file__).resolve().parents[1]  # fmri_pain/
    for folder in (package_dir.parent / "atlases", package_dir / "atlases"):
        candidate = folder / ATLAS_FILENAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"pain-pathway atlas {ATLAS_FILENAME} not found in {package_dir.parent / 'atlases'} "
        f"or {package_dir / 'atlases'}"
    )


@spec_dataclass
class PathwaysSpec:
    """Settings of the pain-pathway analysis.

    Parameters
    ----------
    enabled : bool
        Run the pathway analysis at the group level.
    atlas : str or None
        Node table (TSV); None uses the shipped ``atlases/pain_pathways.tsv``.
    probability_threshold : float
        Minimum probability (percent) of a probabilistic atlas map (Juelich,
        Harvard-Oxford) for a voxel to belong to a node.
    label_fraction : float
        Minimum fraction of a target voxel covered by a label of a label atlas
        (AAL, Talairach) for the voxel to belong to the node.
    default_pain_side : str
        Pain side used when ``pain_side`` is missing or bilateral ("right"/"left").
    hrf_model, drift_model, high_pass :
        Design-matrix settings of the connectivity models (nilearn names; ``high_pass`` in Hz);
        null (the default): the first level's value (``first_level.hrf_model``,
        ``first_level.drift_model``, ``first_level.high_pass``), so the run models of both
        stages filter and convolve alike unless a value is given here.
    connectivity : bool
        Run gPPI and residual-correlation connectivity when runs are given.
    connectivity_confounds : tuple of str
        Confounds TSV columns in the connectivity models (6 motion parameters and
        the mean CSF and white-matter signals by default).
    ppi_seeds : tuple of str
        Seed nodes of the gPPI; empty = every node.
    behaviour_covariates : tuple of str
        sessions.tsv columns related to the node effects.
    decoding : bool
        Run the multivariate decoding.
    n_permutations : int
        Label permutations (within subject) of the decoding accuracy.
    n_bootstrap : int
        Bootstrap resamples of subjects for the BCa intervals of the effect sizes (desc-effectSizes_table.tsv).
    alpha : float
        Level of the confidence intervals (1 - alpha) and of FDR.
    random_state : int
        Seed of the permutations and of the bootstrap resampling.
    """

    enabled: StrictBool = True
    atlas: StrictStr | None = None
    probability_threshold: StrictFloat = bounded(25.0, 0, 100, unit="%")
    label_fraction: StrictFloat = bounded(0.5, 0, 1, lo_open=True)
    default_pain_side: Literal["right", "left"] = "right"
    hrf_model: HRF_MODEL | None = None
    drift_model: Literal["cosine", "polynomial", "none"] | None = None
    high_pass: StrictFloat | None = bounded(None, 0.0001, 1, unit="Hz")
    connectivity: StrictBool = True
    connectivity_confounds: tuple[StrictStr, ...] = CONNECTIVITY_CONFOUNDS
    ppi_seeds: tuple[StrictStr, ...] = field(default_factory=tuple)
    behaviour_covariates: tuple[StrictStr, ...] = ("pain_relief", "vas_pain", "stim_amplitude_ma")
    decoding: StrictBool = True
    n_permutations: StrictInt = bounded(100, 0, 100_000)
    n_bootstrap: StrictInt = bounded(2000, 100, 1_000_000)
    alpha: StrictFloat = bounded(0.05, 0, 1, lo_open=True, hi_open=True)
    random_state: StrictInt = bounded(0, 0, 2**32 - 1)

    def with_design_of(self, first_level: FirstLevelSpec) -> PathwaysSpec:
        """This section with its null design keys (``hrf_model``, ``drift_model``, ``high_pass``)
        set to those of ``first_level``."""
        return dataclasses.replace(
            self, hrf_model=self.hrf_model or first_level.hrf_model,
            drift_model=self.drift_model or first_level.drift_model,
            high_pass=first_level.high_pass if self.high_pass is None else self.high_pass)

    @property
    def atlas_file(self) -> Path:
        """The node table to use."""
        return Path(self.atlas) if self.atlas else atlas_path()
