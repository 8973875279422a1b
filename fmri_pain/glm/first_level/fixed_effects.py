"""Fixed effects over runs and signed within-subject contrasts, on arrays.

Pure functions on ``(n_inputs, n_voxels)`` arrays of effects and variances.
The within-subject differences (``dualMinusScs`` ...) are linear combinations
``sum_i w_i * effect_i`` with variance ``sum_i w_i**2 * var_i``: the weights keep
their sign for the effect (a negative weight really subtracts) and are squared
for the variance of independent estimates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from nilearn.glm.contrasts import Contrast as _NilearnContrast

_TINY = 1.0e-16  # nilearn's floor on variances in fixed effects


@dataclass
class EffectMaps:
    """Effect, variance and z of one contrast over voxels.

    Attributes
    ----------
    effect, variance, z : numpy.ndarray
        Shape ``(n_voxels,)``.
    dof : float
        Degrees of freedom behind the z conversion.
    """

    effect: np.ndarray
    variance: np.ndarray
    z: np.ndarray
    dof: float

    def __iter__(self):
        return iter((self.effect, self.variance, self.z))


def z_from_effect(effect: np.ndarray, variance: np.ndarray, dof: float) -> np.ndarray:
    """z score of ``effect / sqrt(variance)`` taken as a t statistic with ``dof``.

    Uses nilearn's :class:`~nilearn.glm.contrasts.Contrast`, which converts
    through both tails of the t distribution so large statistics do not saturate.
    """
    con = _NilearnContrast(effect=np.asarray(effect, dtype=float),
                           variance=np.asarray(variance, dtype=float),
                           dof=float(dof), stat_type="t")
    return np.asarray(con.z_score(), dtype=float)


def fixed_effects(effects: np.ndarray | Sequence[np.ndarray],
                  variances: np.ndarray | Sequence[np.ndarray],
                  dofs: Sequence[float] | None = None,
                  precision_weighted: bool = True) -> EffectMaps:
    """Fixed-effects combination of independent estimates of the same effect.

    Same arithmetic as :func:`nilearn.glm.contrasts.compute_fixed_effects`
    (variances floored at 1e-16; z from a t with the summed degrees of freedom).

    Parameters
    ----------
    effects, variances : array-like of shape (n_inputs, n_voxels)
    dofs : sequence of float, optional
        Residual degrees of freedom of each input (nilearn's default: 100 each).
    precision_weighted : bool, default=True
        Inverse-variance weights (else the plain mean, variance / n).

    Returns
    -------
    EffectMaps
    """
    effects = np.atleast_2d(np.asarray(effects, dtype=float))
    variances = np.maximum(np.atleast_2d(np.asarray(variances, dtype=float)), _TINY)
    if effects.shape != variances.shape:
        raise ValueError(f"effects {effects.shape} and variances {variances.shape} differ in shape")
    n = effects.shape[0]
    dofs = [100.0] * n if dofs is None else [float(d) for d in dofs]
    if len(dofs) != n:
        raise ValueError(f"{len(dofs)} degrees of freedom for {n} inputs")
    if precision_weighted:
        weights = 1.0 / variances
        variance = 1.0 / weights.sum(0)
        effect = (effects * weights).sum(0) * variance
    else:
        variance = variances.mean(0) / n
        effect = effects.mean(0)
    dof = float(np.sum(dofs))
    return EffectMaps(effect, variance, z_from_effect(effect, variance, dof), dof)


def linear_combination(effects: Mapping[str, np.ndarray],
                       variances: Mapping[str, np.ndarray],
                       weights: Mapping[str, float],
                       dofs: Mapping[str, float] | None = None) -> EffectMaps:
    """Signed linear contrast of independent condition estimates.

    ``effect = sum_i w_i * effect_i`` and ``variance = sum_i w_i**2 * var_i``;
    conditions with a zero weight are not needed.

    Parameters
    ----------
    effects, variances : mapping of condition -> array (n_voxels,)
    weights : mapping of condition -> weight
    dofs : mapping of condition -> degrees of freedom, optional
        The z map uses the summed dofs of the conditions used (100 each if absent).

    Returns
    -------
    EffectMaps

    Raises
    ------
    KeyError
        If a condition with a non-zero weight has no estimate.
    """
    used = [c for c, w in weights.items() if w != 0]
    if not used:
        raise ValueError("contrast has no non-zero weight")
    missing = [c for c in used if c not in effects or c not in variances]
    if missing:
        raise KeyError(f"no estimate for condition(s) {missing}")
    effect = sum(float(weights[c]) * np.asarray(effects[c], dtype=float) for c in used)
    variance = sum(float(weights[c]) ** 2 * np.asarray(variances[c], dtype=float) for c in used)
    dof = float(sum((dofs or {}).get(c, 100.0) for c in used))
    return EffectMaps(effect, variance, z_from_effect(effect, variance, dof), dof)
