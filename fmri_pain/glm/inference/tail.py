"""Tail acceleration: FWE p-values below 1 / n_perm from a generalised Pareto fit to the null.

PALM's ``-accel tail`` (Winkler et al. 2016, NeuroImage 141:502; Knijnenburg
et al. 2009, Bioinformatics 25:i161). The upper tail of a max-statistic null
distribution (max-t, max-TFCE, max cluster mass) is fitted with a
generalised Pareto distribution (GPD) and the p-values of scores in the tail
come from the fit instead of the count of exceedances:

1. The tail starts at the quantile ``Q`` = 0.751, 0.761, ..., 0.971 of the
   null's empirical cdf, tried in turn; its threshold ``u`` is the midpoint
   between the last null value below the tail and the first in it.
2. The GPD is fitted to the exceedances ``y = null - u`` by the method of
   moments (Hosking & Wallis 1987, section 3.2): with mean ``m`` and variance
   ``s2``, scale ``a = m (m^2/s2 + 1) / 2`` and shape ``k = (m^2/s2 - 1) / 2``
   (Hosking's sign: ``k > 0`` is a bounded tail), survival
   ``(1 - k y / a)^(1/k)`` (``exp(-y / a)`` when ``k = 0``).
3. The fit is kept when the Anderson-Darling test of Choulakian & Stephens
   (2001, Technometrics 43:478; their table for estimated ``a`` and ``k``)
   gives p > 0.05; otherwise the next quantile is tried. When none passes,
   the plain permutation p-values stay (no fit is reported).
4. A score above ``u`` gets ``p = (n_tail / n) * survival(score - u)``.

As in PALM the fit is only attempted when some permutation p-value is below
0.10. Differences from PALM's code: the table is interpolated at ``k``
clipped to its range [-0.5, 0.9] (PALM clips at 0.5), and a p-value never
reaches 0: beyond the end of a bounded fitted tail, or below the smallest
double, p is the smallest positive double.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmri_pain.glm.inference.result import PermutationResult

__all__ = ["TailFit", "fit_tail", "tail_p", "accelerate", "accelerate_result", "P_THRESHOLD",
           "QUANTILES"]

QUANTILES = np.arange(751, 972, 10) / 1000.0
"""Tail quantiles tried in turn (PALM: 0.751 to 0.971 by 0.01)."""

P_THRESHOLD = 0.10
"""The fit is attempted when some permutation p-value is below this (PALM's default)."""

_FIT_ALPHA = 0.05  # the Anderson-Darling p a fit must exceed

# Choulakian & Stephens (2001), table 2 (a and k estimated): critical values of A^2
# for shape k (rows) at the upper-tail probabilities _AD_P (columns)
_AD_K = np.array([0.9, 0.5, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5])
_AD_P = np.array([0.5, 0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001])
_AD_A2 = np.array([
    [0.3390, 0.4710, 0.6410, 0.7710, 0.9050, 1.0860, 1.2260, 1.5590],
    [0.3560, 0.4990, 0.6850, 0.8300, 0.9780, 1.1800, 1.3360, 1.7070],
    [0.3760, 0.5340, 0.7410, 0.9030, 1.0690, 1.2960, 1.4710, 1.8930],
    [0.3860, 0.5500, 0.7660, 0.9350, 1.1100, 1.3480, 1.5320, 1.9660],
    [0.3970, 0.5690, 0.7960, 0.9740, 1.1580, 1.4090, 1.6030, 2.0640],
    [0.4100, 0.5910, 0.8310, 1.0200, 1.2150, 1.4810, 1.6870, 2.1760],
    [0.4260, 0.6170, 0.8730, 1.0740, 1.2830, 1.5670, 1.7880, 2.3140],
    [0.4450, 0.6490, 0.9240, 1.1400, 1.3650, 1.6720, 1.9090, 2.4750],
    [0.4680, 0.6880, 0.9850, 1.2210, 1.4650, 1.7990, 2.0580, 2.6740],
    [0.4960, 0.7350, 1.0610, 1.3210, 1.5900, 1.9580, 2.2430, 2.9220],
])


@dataclass(frozen=True)
class TailFit:
    """A generalised Pareto fit to the upper tail of a null distribution."""

    threshold: float
    """``u``: where the tail starts (scores above it get the fitted p)."""
    scale: float
    """``a`` (> 0)."""
    shape: float
    """``k``, Hosking's sign (> 0: bounded tail, < 0: heavy tail)."""
    quantile: float
    """The null quantile the tail starts at."""
    n_tail: int
    """Null values in the tail."""
    n_null: int
    """Null values in all."""
    ad_p: float
    """Anderson-Darling p of the fit (> 0.05)."""

    def critical_value(self, alpha: float) -> float | None:
        """Score whose fitted p is ``alpha`` (None when ``alpha`` is not inside the tail)."""
        s = alpha * self.n_null / self.n_tail
        if not 0 < s < 1:
            return None
        if abs(self.shape) < np.finfo(float).eps:
            return float(self.threshold - self.scale * np.log(s))
        return float(self.threshold + self.scale * (1.0 - s ** self.shape) / self.shape)

    def sidecar(self) -> dict:
        """Strict-JSON keys of the fit."""
        return {"Threshold": self.threshold, "Scale": self.scale, "Shape": self.shape,
                "Quantile": self.quantile, "TailSize": self.n_tail, "NullSize": self.n_null,
                "AndersonDarlingP": self.ad_p}


def _survival(y: np.ndarray, a: float, k: float) -> np.ndarray:
    """GPD survival of exceedances ``y >= 0`` (0 beyond a bounded tail's end)."""
    y = np.asarray(y, dtype=float)
    if abs(k) < np.finfo(float).eps:
        return np.exp(-y / a)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        base = 1.0 - k * y / a
        return np.where(base > 0, np.abs(base) ** (1.0 / k), 0.0)


def _anderson_darling_p(z: np.ndarray, k: float) -> float:
    """p of the Anderson-Darling statistic of survival values ``z`` (uniform under the fit)."""
    z = np.sort(np.asarray(z, dtype=float))
    n = z.size
    if n < 2 or z[0] <= 0 or z[-1] >= 1:
        return 0.0
    j = np.arange(1, n + 1)
    a2 = -n - np.sum((2 * j - 1) * (np.log(z) + np.log1p(-z[::-1]))) / n
    kc = float(np.clip(k, _AD_K[-1], _AD_K[0]))
    crit = np.array([np.interp(kc, _AD_K[::-1], _AD_A2[::-1, c]) for c in range(_AD_P.size)])
    # p at A^2: linear in the table, extrapolated beyond its ends (as MATLAB's interp1 'extrap')
    if a2 <= crit[0]:
        i = 0
    elif a2 >= crit[-1]:
        i = crit.size - 2
    else:
        i = int(np.searchsorted(crit, a2)) - 1
    p = _AD_P[i] + (a2 - crit[i]) * (_AD_P[i + 1] - _AD_P[i]) / (crit[i + 1] - crit[i])
    return float(min(max(p, 0.0), 1.0))


def fit_tail(null: np.ndarray, quantiles: np.ndarray = QUANTILES) -> TailFit | None:
    """Fit the upper tail of ``null`` (PALM's procedure); None when no quantile fits.

    Parameters
    ----------
    null : ndarray, shape (n,)
        A max-statistic null distribution (larger is more extreme).
    quantiles : ndarray
        Tail quantiles tried in turn.

    Returns
    -------
    TailFit or None
    """
    null = np.sort(np.asarray(null, dtype=float))
    n = null.size
    finite = np.isfinite(null)
    if n < 10 or not finite.all():
        return None
    cdf = np.searchsorted(null, null, side="right") / n  # ties share the highest rank
    for q in quantiles:
        first = int(np.argmax(cdf >= q))
        if cdf[first] < q:
            continue
        tail = null[first:]
        if tail.size < 3:
            continue
        u = (null[first - 1] + null[first]) / 2 if first > 0 else null[0] - (null[1] - null[0]) / 2
        y = tail - u
        mean, var = float(np.mean(y)), float(np.var(y, ddof=1))
        if not (var > 0 and mean > 0):
            continue
        ratio = mean * mean / var
        a, k = mean * (ratio + 1) / 2, (ratio - 1) / 2
        ad_p = _anderson_darling_p(_survival(y, a, k), k)
        if ad_p > _FIT_ALPHA:
            return TailFit(float(u), float(a), float(k), float(q), int(tail.size), int(n), ad_p)
    return None


def tail_p(scores: np.ndarray, fit: TailFit, p_perm: np.ndarray) -> np.ndarray:
    """p of each score: fitted above the tail threshold, ``p_perm`` elsewhere (never 0)."""
    scores = np.asarray(scores, dtype=float)
    p = np.array(p_perm, dtype=float, copy=True)
    above = scores > fit.threshold
    if above.any():
        fitted = fit.n_tail / fit.n_null * _survival(scores[above] - fit.threshold, fit.scale,
                                                     fit.shape)
        p[above] = np.maximum(fitted, np.finfo(float).tiny)
    return p


def accelerate(scores: np.ndarray, null: np.ndarray, p_perm: np.ndarray,
               p_threshold: float = P_THRESHOLD) -> tuple[np.ndarray, TailFit | None]:
    """FWE p-values of ``scores`` with the tail of ``null`` fitted when it helps.

    Parameters
    ----------
    scores : ndarray
        Observed scores (larger is more extreme).
    null : ndarray, shape (n,)
        Their max-statistic null distribution.
    p_perm : ndarray
        The permutation p-values of ``scores`` (kept where the fit does not apply).
    p_threshold : float
        The fit is attempted only when some ``p_perm`` is below this.

    Returns
    -------
    p : ndarray
        Fitted above the tail threshold, ``p_perm`` elsewhere.
    fit : TailFit or None
        None when no fit was attempted or none passed the goodness-of-fit test.
    """
    p_perm = np.asarray(p_perm, dtype=float)
    if not np.any(p_perm < p_threshold):
        return p_perm, None
    fit = fit_tail(null)
    if fit is None:
        return p_perm, None
    return tail_p(scores, fit, p_perm), fit


_FITTED = (("stat", "max_null", "p_fwe", "p_uncorrected"),
           ("tfce", "tfce_max_null", "p_tfce_fwe", "p_tfce_uncorrected"),
           ("cluster_mass", "cluster_mass_null", "cluster_p_mass_fwe", "cluster_p_mass_uncorrected"))


def accelerate_result(result: PermutationResult) -> PermutationResult:
    """Tail-accelerate the FWE p-values of a result (max-t, TFCE, cluster mass), in place.

    Each fitted null gets its :class:`TailFit` in ``result.tail_fits`` (None when
    no fit was attempted or none passed). The true uncorrected p of a voxel is
    never above its FWE p, so an uncorrected p-value above its accelerated FWE
    p-value is lowered to it (FWE p >= uncorrected p holds).
    """
    scores = {"stat": np.abs(result.stat) if result.two_sided else result.stat,
              "tfce": None if result.tfce is None else np.abs(result.tfce),
              "cluster_mass": result.cluster_mass}
    for kind, null_attr, fwe_attr, unc_attr in _FITTED:
        null, p_fwe = getattr(result, null_attr), getattr(result, fwe_attr)
        if null is None or p_fwe is None:
            continue
        inside = np.ones(p_fwe.shape, bool) if kind != "cluster_mass" else result.cluster_size > 0
        p_new, fit = accelerate(scores[kind][inside], null, p_fwe[inside])
        result.tail_fits[kind] = fit
        if fit is None:
            continue
        p_fwe = p_fwe.copy()
        p_fwe[inside] = p_new
        setattr(result, fwe_attr, p_fwe)
        setattr(result, unc_attr, np.minimum(getattr(result, unc_attr), p_fwe))
    result.accel = "tail"
    return result
