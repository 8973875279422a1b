"""The outcome of a permutation test, and p-values and thresholds from null distributions.

p-values are ``(1 + #{null >= observed}) / (1 + n_perm)`` as in nilearn's
``permuted_ols``; observed and null scores are compared with a relative tie
tolerance (:func:`tie_threshold`), so FWE p >= uncorrected p.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PermutationResult", "fwe_threshold", "tie_threshold", "p_at_or_above", "p_from_null"]


@dataclass
class PermutationResult:
    """Outcome of :func:`~fmri_pain.glm.inference.permutation.permutation_test` (all maps are 1-D over voxels).

    p-values are stored as p (not -log10 p); use :meth:`logp`.
    """

    stat: np.ndarray
    stat_type: str
    df: tuple[float, float]
    p_uncorrected: np.ndarray
    p_fwe: np.ndarray
    max_null: np.ndarray
    n_perm: int
    scheme: str
    two_sided: bool
    tfce: np.ndarray | None = None
    p_tfce_fwe: np.ndarray | None = None
    tfce_max_null: np.ndarray | None = None
    cluster_forming_threshold: float | None = None
    cluster_p_threshold: float | None = None
    cluster_size: np.ndarray | None = None
    cluster_mass: np.ndarray | None = None
    cluster_p_extent_fwe: np.ndarray | None = None
    cluster_p_mass_fwe: np.ndarray | None = None
    cluster_size_null: np.ndarray | None = None
    cluster_mass_null: np.ndarray | None = None
    p_tfce_uncorrected: np.ndarray | None = None
    cluster_p_mass_uncorrected: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)
    n_distinct: int | None = None
    """Distinct rearrangements of the scheme (None for explicit rearrangements)."""
    exhaustive: bool = False
    """All distinct rearrangements were used, each once (the p-values are exact)."""
    n_identity: int = 0
    """Rearrangements in the null equivalent to the observed one (identity, global flip)."""
    n_excluded: int = 0
    """Voxels left out for zero residual variance (stat 0, p = 1 there)."""
    warnings: list[str] = field(default_factory=list)
    accel: str = "none"
    """``tail``: FWE p-values from generalised Pareto fits (:mod:`fmri_pain.glm.inference.tail`)."""
    tail_fits: dict = field(default_factory=dict)
    """With ``accel="tail"``: the fit of each null (``stat``, ``tfce``, ``cluster_mass``), None
    where no fit was attempted (no p below 0.10) or none passed the goodness-of-fit test."""
    z: np.ndarray | None = None
    """z map of the statistic when it is not t / F with ``df`` (the G statistic: per-voxel df)."""
    stat_df: np.ndarray | None = None
    """Per-voxel degrees of freedom of the statistic (the G statistic's nu), else None."""
    variance_groups: dict | None = None
    """With variance groups (:mod:`fmri_pain.glm.inference.variance_groups`): the statistic,
    the groups and their sizes, the range of nu (the sidecar's ``VarianceGroups``)."""

    @property
    def n_rearrangements(self) -> int:
        """Rearrangements the p-values are computed over, the observed one included."""
        return self.n_perm + 1

    @property
    def min_p(self) -> float:
        """The smallest p-value these rearrangements can give."""
        return (1.0 + self.n_identity) / (1.0 + self.n_perm)

    def sidecar_fields(self) -> dict:
        """Strict-JSON sidecar keys describing the rearrangements used."""
        n_distinct = self.n_distinct
        if n_distinct is not None and n_distinct > 2**53:  # beyond exact JSON integers
            n_distinct = float(n_distinct) if n_distinct < 1e308 else None
        return {"NumberOfDistinctRearrangements": n_distinct,
                "NumberOfPermutations": self.n_rearrangements,
                "Exhaustive": bool(self.exhaustive),
                "MinimumAttainableP": self.min_p,
                "PermutationScheme": self.scheme,
                "VoxelsExcludedZeroVariance": int(self.n_excluded),
                "PermutationWarnings": list(self.warnings),
                "VarianceGroups": self.variance_groups,
                **self._tail_sidecar()}

    def _tail_sidecar(self) -> dict:
        out = {"TailAcceleration": self.accel}
        if self.accel == "tail":
            names = {"stat": "MaxStatistic", "tfce": "MaxTFCE", "cluster_mass": "MaxClusterMass"}
            out["TailFits"] = {names[k]: (None if fit is None else fit.sidecar())
                               for k, fit in self.tail_fits.items()}
        return out

    @property
    def t(self) -> np.ndarray:
        """The observed statistic (t, or F for a multi-row contrast)."""
        return self.stat

    def logp(self, name: str) -> np.ndarray:
        """``-log10`` of a p map: ``uncorrected``, ``fwe``, ``tfce_fwe``,
        ``cluster_extent_fwe`` or ``cluster_mass_fwe``."""
        attr = {"uncorrected": "p_uncorrected", "fwe": "p_fwe", "tfce_fwe": "p_tfce_fwe",
                "tfce_uncorrected": "p_tfce_uncorrected",
                "cluster_extent_fwe": "cluster_p_extent_fwe",
                "cluster_mass_fwe": "cluster_p_mass_fwe",
                "cluster_mass_uncorrected": "cluster_p_mass_uncorrected"}[name]
        p = getattr(self, attr)
        if p is None:
            raise ValueError(f"{name} p-values were not computed")
        return -np.log10(p)

    def threshold(self, alpha: float = 0.05, kind: str = "stat") -> float:
        """FWE critical value: a voxel/cluster is significant if its score
        (``|stat|`` when two-sided) exceeds it. ``kind``: stat, tfce, size, mass.
        With a tail fit of that null, the fitted quantile when ``alpha`` lies in the tail."""
        null = {"stat": self.max_null, "tfce": self.tfce_max_null,
                "size": self.cluster_size_null, "mass": self.cluster_mass_null}[kind]
        if null is None:
            raise ValueError(f"no {kind} null distribution was computed")
        fit = self.tail_fits.get({"mass": "cluster_mass"}.get(kind, kind))
        if fit is not None:  # tail acceleration: the fitted quantile, inside the tail
            fitted = fit.critical_value(alpha)
            if fitted is not None:
                return fitted
        return fwe_threshold(null, alpha)

    def summary(self, alpha: float = 0.05) -> dict:
        """Numbers for a report: thresholds and counts of significant voxels."""
        score = np.abs(self.stat) if self.two_sided else self.stat
        out = {"scheme": self.scheme, "n_perm": self.n_perm, "stat_type": self.stat_type,
               "n_rearrangements": self.n_rearrangements, "n_distinct": self.sidecar_fields()[
                   "NumberOfDistinctRearrangements"], "exhaustive": bool(self.exhaustive),
               "min_p": self.min_p, "n_voxels_excluded": int(self.n_excluded),
               "df": list(self.df), "two_sided": self.two_sided, "alpha": alpha,
               "max_stat": float(np.nanmax(score)),
               "fwe_threshold": self.threshold(alpha),
               "n_voxels_fwe": int(np.sum(self.p_fwe < alpha)),
               "n_voxels_uncorrected": int(np.sum(self.p_uncorrected < alpha))}
        if self.tfce is not None:
            out.update(tfce_fwe_threshold=self.threshold(alpha, "tfce"),
                       n_voxels_tfce_fwe=int(np.sum(self.p_tfce_fwe < alpha)))
        if self.cluster_size is not None:
            out.update(cluster_forming_threshold=self.cluster_forming_threshold,
                       cluster_p_threshold=self.cluster_p_threshold,
                       cluster_extent_threshold=self.threshold(alpha, "size"),
                       cluster_mass_threshold=self.threshold(alpha, "mass"),
                       n_voxels_cluster_extent_fwe=int(np.sum(self.cluster_p_extent_fwe < alpha)),
                       n_voxels_cluster_mass_fwe=int(np.sum(self.cluster_p_mass_fwe < alpha)))
        return out


def fwe_threshold(max_null: np.ndarray, alpha: float = 0.05) -> float:
    """Critical value of a max-statistic null distribution.

    Scores strictly above it have ``(1 + #{null >= score}) / (1 + n) <= alpha``.
    """
    null = np.sort(np.asarray(max_null, dtype=float))[::-1]
    j = int(math.floor(alpha * (null.size + 1) + 1e-9)) - 1  # nulls allowed at or above
    if j >= null.size:
        return -np.inf
    if j < 0:
        return np.inf
    return float(null[j])


def tie_threshold(scores: np.ndarray) -> np.ndarray:
    """Scores less a relative tolerance of 1e-12: a rearranged score at or above
    it ties with or beats the observed one (they are computed along different
    paths, so exact ties differ by rounding)."""
    scores = np.asarray(scores, dtype=float)
    return scores - 1e-12 * np.abs(scores)


def p_at_or_above(threshold: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= threshold}) / (1 + n)`` for every threshold."""
    null = np.sort(np.asarray(null, dtype=float))
    n_ge = null.size - np.searchsorted(null, np.asarray(threshold, dtype=float), side="left")
    return (1.0 + n_ge) / (1.0 + null.size)


def p_from_null(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= score}) / (1 + n)`` for every score, ties within 1e-12 relative."""
    return p_at_or_above(tie_threshold(scores), null)

