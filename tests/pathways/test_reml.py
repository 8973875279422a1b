"""The profiled REML of the random-intercept model against an independent dense criterion,
statsmodels' MixedLM and the closed-form ANOVA solution of complete crossover data.

The dense criterion builds ``V = s_b Z Z' + s_e I`` in full and evaluates the REML
log-likelihood ``log|V| + log|X' V^-1 X| + r' V^-1 r`` with generic linear algebra, at any
two variance components (no profiling, no per-subject sums): the fitted components must
minimise it, against statsmodels' estimates and against any perturbation.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.regression.mixed_linear_model import MixedLM

from fmri_pain.pathways.reml import random_intercept_reml
from tests.support.pathways_fixtures import closed_form_reml, null_effects, williams_design


def dense_reml_criterion(y, x, groups, group_var, resid_var) -> float:
    labels = np.unique(groups)
    z = (np.asarray(groups)[:, None] == labels[None]).astype(float)
    v = group_var * z @ z.T + resid_var * np.eye(len(y))
    vinv = np.linalg.inv(v)
    xvx = x.T @ vinv @ x
    beta = np.linalg.solve(xvx, x.T @ vinv @ y)
    r = y - x @ beta
    return float(np.linalg.slogdet(v)[1] + np.linalg.slogdet(xvx)[1] + r @ vinv @ r)


def unbalanced_table(rng, n_subjects: int, subject_sd: float, drop: float):
    groups = np.repeat(np.arange(n_subjects), 3)
    x = np.column_stack([np.tile(np.eye(3), (n_subjects, 1)), rng.standard_normal(3 * n_subjects)])
    y = (x @ rng.standard_normal(4) + subject_sd * rng.standard_normal(n_subjects)[groups]
         + rng.standard_normal(3 * n_subjects))
    keep = rng.random(len(y)) >= drop
    keep[:6] = True  # two complete subjects: the random intercept is identifiable
    return y[keep], x[keep], groups[keep]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_subjects=st.integers(3, 20),
       subject_sd=st.sampled_from([0.0, 0.3, 1.0, 4.0]), drop=st.sampled_from([0.0, 0.1, 0.3]))
def test_the_fit_minimises_the_dense_reml_criterion(seed, n_subjects, subject_sd, drop):
    y, x, groups = unbalanced_table(np.random.default_rng(seed), n_subjects, subject_sd, drop)
    fit = random_intercept_reml(y, x, groups)
    assert fit.group_var >= 0 and fit.resid_var > 0
    best = dense_reml_criterion(y, x, groups, fit.group_var, fit.resid_var)
    for gv, rv in [(fit.group_var * 1.01 + 1e-4, fit.resid_var), (fit.group_var * 0.99, fit.resid_var),
                   (fit.group_var, fit.resid_var * 1.01), (fit.group_var, fit.resid_var * 0.99),
                   (fit.group_var * 3 + 0.1, fit.resid_var), (0.0, fit.resid_var)]:
        assert best <= dense_reml_criterion(y, x, groups, gv, rv) + 1e-9
    # the fixed effects are GLS at the fitted components
    v = fit.group_var * (groups[:, None] == groups[None]) + fit.resid_var * np.eye(len(y))
    vinv = np.linalg.inv(v)
    np.testing.assert_allclose(fit.params, np.linalg.solve(x.T @ vinv @ x, x.T @ vinv @ y),
                               rtol=1e-8, atol=1e-10)


def test_the_fit_is_at_least_as_good_as_statsmodels_and_close_to_it():
    rng = np.random.default_rng(3)
    for trial in range(12):
        y, x, groups = unbalanced_table(rng, 6 + trial, [0.3, 1.0, 3.0][trial % 3], 0.15)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = MixedLM(y, x, groups=groups).fit(reml=True)
        sm_group_var = float(np.asarray(sm.cov_re)[0, 0])
        fit = random_intercept_reml(y, x, groups)
        ours = dense_reml_criterion(y, x, groups, fit.group_var, fit.resid_var)
        assert ours <= dense_reml_criterion(y, x, groups, sm_group_var, sm.scale) + 1e-9
        assert fit.resid_var == pytest.approx(sm.scale, rel=2e-3)
        assert fit.group_var == pytest.approx(sm_group_var, rel=2e-2, abs=2e-3)
        np.testing.assert_allclose(fit.params, sm.fe_params, rtol=0, atol=2e-3)


@pytest.mark.parametrize("n", [8, 20])
def test_complete_crossover_data_give_the_anova_solution(n):
    """Complete Williams crossover: REML is the ANOVA solution (boundary at 0 included)."""
    design = williams_design(n)
    x = np.column_stack([(design["condition"] == c).astype(float) for c in ("SCS", "DRGS", "DUAL")]
                        + [(design["period"] == p).astype(float) - (design["period"] == 3)
                           for p in (1, 2)])
    y = null_effects(design, 40, np.random.default_rng(n), subject_sd=0.3)
    closed = closed_form_reml(x, design["subject"], y)
    at_boundary = 0
    for s in range(y.shape[1]):
        fit = random_intercept_reml(y[:, s], x, design["subject"].to_numpy())
        assert fit.group_var == pytest.approx(closed["group_var"][s], rel=1e-6, abs=1e-9)
        assert fit.resid_var == pytest.approx(closed["resid_var"][s], rel=1e-6)
        np.testing.assert_allclose(fit.params, closed["beta"][:, s], rtol=1e-7, atol=1e-9)
        at_boundary += closed["group_var"][s] == 0
    assert at_boundary > 0  # subject SD 0.3: some sets have a between-subject MS below the within


def test_a_rank_deficient_design_is_an_error():
    y, x, groups = unbalanced_table(np.random.default_rng(0), 6, 1.0, 0.0)
    with pytest.raises(ValueError, match="not estimable"):
        random_intercept_reml(y, np.column_stack([x, x[:, 0] + x[:, 1]]), groups)
