"""REML of the random-intercept model for balanced data with any fixed-effects design, vectorised.

With ``k`` observations per subject, ``V = s2 (W + theta B)`` (``B`` the subject-mean
projection, ``W = I - B``, ``theta = 1 + k g2 / s2``). The REML criterion profiled
over ``s2`` is ``(N - p) log(q / (N - p)) + m log theta + log|X' V0^-1 X|`` with
``V0^-1 = W + B / theta`` and ``q`` the GLS residual quadratic form; it is minimised
over ``log theta >= 0`` by golden-section search for every data column at once.
Unlike :func:`tests.support.pathways_fixtures.closed_form_reml` it needs no
orthogonal block structure (carry-over columns have between-subject parts), so GLS
is not OLS here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def profile_reml(x, groups, y, log_theta_max: float = 12.0, iterations: int = 80) -> dict:
    """REML estimates of every column of ``y`` (n_obs, n_sets).

    Returns
    -------
    dict with beta (p, sets; GLS at the REML variance components), group_var, resid_var (sets,).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    codes, labels = pd.factorize(pd.Series(groups).astype(str))
    counts = np.bincount(codes)
    assert (counts == counts[0]).all(), "balanced data only"
    k, m, n, p = counts[0], len(labels), len(codes), x.shape[1]
    z = np.eye(m)[codes]
    bproj = z @ z.T / k
    wproj = np.eye(n) - bproj
    xwx, xbx = x.T @ wproj @ x, x.T @ bproj @ x
    xwy, xby = x.T @ wproj @ y, x.T @ bproj @ y  # (p, S)
    ywy = np.einsum("is,is->s", y, wproj @ y)
    yby = np.einsum("is,is->s", y, bproj @ y)

    def parts(log_theta):
        theta = np.exp(log_theta)  # (S,)
        a = xwx[None] + xbx[None] / theta[:, None, None]  # (S, p, p)
        b = (xwy + xby / theta[None]).T  # (S, p)
        beta = np.linalg.solve(a, b[..., None])[..., 0]
        q = ywy + yby / theta - np.einsum("sp,sp->s", b, beta)
        crit = (n - p) * np.log(q / (n - p)) + m * log_theta + np.linalg.slogdet(a)[1]
        return crit, beta, q

    lo = np.zeros(y.shape[1])
    hi = np.full(y.shape[1], log_theta_max)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = parts(c)[0], parts(d)[0]
    for _ in range(iterations):
        left = fc < fd
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
        c_new = hi - ratio * (hi - lo)
        d_new = lo + ratio * (hi - lo)
        c, d = c_new, d_new
        fc, fd = parts(c)[0], parts(d)[0]
    best = (lo + hi) / 2
    # the boundary theta = 1 (no subject variance) when it beats the interior optimum
    at_zero = parts(np.zeros_like(best))[0] <= parts(best)[0]
    best = np.where(at_zero, 0.0, best)
    _, beta, q = parts(best)
    resid_var = q / (n - p)
    group_var = (np.exp(best) - 1) * resid_var / k
    return {"beta": beta.T, "group_var": group_var, "resid_var": resid_var, "boundary": at_zero}
