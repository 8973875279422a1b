"""Parameters of the pain-pathway analysis (embedded as ``spec.pathways``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
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
        Design-matrix settings of the connectivity models (nilearn names).
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

    enabled: bool = True
    atlas: str | None = None
    probability_threshold: float = 25.0
    label_fraction: float = 0.5
    default_pain_side: str = "right"
    hrf_model: str = "spm"
    drift_model: str = "cosine"
    high_pass: float = 0.008
    connectivity: bool = True
    connectivity_confounds: tuple[str, ...] = CONNECTIVITY_CONFOUNDS
    ppi_seeds: tuple[str, ...] = field(default_factory=tuple)
    behaviour_covariates: tuple[str, ...] = ("pain_relief", "vas_pain", "stim_amplitude_ma")
    decoding: bool = True
    n_permutations: int = 100
    n_bootstrap: int = 2000
    alpha: float = 0.05
    random_state: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.probability_threshold <= 100:
            raise ValueError(f"pathways.probability_threshold must be in [0, 100], got {self.probability_threshold}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"pathways.label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.default_pain_side not in ("right", "left"):
            raise ValueError(f"pathways.default_pain_side must be 'right' or 'left', got {self.default_pain_side!r}")
        if self.n_permutations < 0:
            raise ValueError("pathways.n_permutations must be >= 0")
        if self.n_bootstrap < 1:
            raise ValueError("pathways.n_bootstrap must be >= 1")
        if not 0 < self.alpha < 1:
            raise ValueError("pathways.alpha must be in (0, 1)")
        object.__setattr__(self, "ppi_seeds", tuple(self.ppi_seeds))
        object.__setattr__(self, "connectivity_confounds", tuple(self.connectivity_confounds))
        object.__setattr__(self, "behaviour_covariates", tuple(self.behaviour_covariates))

    @property
    def atlas_file(self) -> Path:
        """The node table to use."""
        return Path(self.atlas) if self.atlas else atlas_path()
