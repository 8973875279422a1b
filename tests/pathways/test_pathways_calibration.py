"""Small-sample calibration of the pathway statistics on null tables.

Null ROI tables of a Williams crossover (3 conditions, random subject intercepts SD 1,
residual SD 0.5, period effects) at n = 8 and n = 20: every contrast must reject at
alpha = 0.05 within the binomial 95 % interval of 500 null sets (statsmodels' normal
reference rejected 8 % at n = 8), and Benjamini-Hochberg over nodes must hold q.

The REML variance components of the balanced null sets come from their closed form
(exact for complete data, :func:`tests.support.pathways_fixtures.closed_form_reml`), all
sets at once, and go through the production code that turns them into estimates,
covariances, Satterthwaite df and p values (:func:`random_intercept_fit`,
:func:`model_contrasts`); a subset is fitted end to end by the production REML
(:func:`roi_statistics`) and must agree to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from fmri_pain.pathways.behaviour import behaviour_model, within_between
from fmri_pain.pathways.stats import (
    add_fdr,
    contrast_test,
    crossover_design,
    fit_crossover,
    model_contrasts,
    random_intercept_fit,
    roi_statistics,
)
from fmri_pain.trial import CONDITIONS
from tests.support.pathways_fixtures import closed_form_reml, null_effects, williams_design

ALPHA = 0.05
N_SETS = 500
PERIOD_EFFECTS = (0.4, 0.0, -0.4)


def binomial_interval(n: int, p: float = ALPHA) -> tuple[int, int]:
    low, high = stats.binom.interval(0.95, n, p)
    return int(low), int(high)


def _closed_form_rows(design: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """model_contrasts of every null set, with the closed-form REML variance components."""
    exog, present, period_columns = crossover_design(design, CONDITIONS)
    groups = design["subject"].to_numpy()
    reml = closed_form_reml(exog.to_numpy(), groups, y)
    assert reml["boundary"].mean() < 0.01  # (almost) always interior: REML = ANOVA
    rows = []
    for r in range(y.shape[1]):
        fit = random_intercept_fit(exog, groups, reml["beta"][:, r], reml["group_var"][r],
                                   reml["resid_var"][r])
        fit.update(present=present, period_columns=period_columns, periods=[1, 2, 3])
        rows += [{**row, "set": r} for row in model_contrasts(fit, ALPHA)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module", params=[8, 20], ids=["n8", "n20"])
def null_rows(request):
    n = request.param
    rng = np.random.default_rng(1000 + n)
    design = williams_design(n)
    y = null_effects(design, N_SETS, rng, period_effects=PERIOD_EFFECTS)
    return {"n": n, "design": design, "y": y, "rows": _closed_form_rows(design, y)}


def test_balanced_df_equal_the_within_subject_anova():
    """Complete data, n = 8: statsmodels' REML fit gets the ANOVA df, computed here by hand."""
    n, k = 8, 3
    design = williams_design(n)
    y = null_effects(design, 1, np.random.default_rng(5))
    data = design.assign(effect=y[:, 0])
    rows = pd.DataFrame(model_contrasts(fit_crossover(data))).set_index("contrast")
    within_df = (n - 1) * (k - 1) - (k - 1)  # (n - 1)(k - 1) minus the period df
    for name in ("drgsMinusScs", "dualMinusScs", "dualMinusDrgs", "dualMinusMean",
                 "period2MinusPeriod1", "period3MinusPeriod1", "conditionF"):
        assert rows.loc[name, "df"] == pytest.approx(within_df, rel=1e-6), name
        assert rows.loc[name, "df_method"] == "satterthwaite"
    assert rows.loc["conditionF", "df_num"] == 2
    # a condition mean = grand mean (between-subject stratum) + within-subject deviation:
    # var = MSB / N + c MSE, Satterthwaite df from MSB (n - 1 df) and MSE (within_df)
    exog, _, _ = crossover_design(data, CONDITIONS)
    reml = closed_form_reml(exog.to_numpy(), design["subject"], y)
    msb, mse = float(reml["msb"][0]), float(reml["mse"][0])
    subject = pd.get_dummies(design["subject"]).to_numpy(float)
    within_x = exog.to_numpy() - subject @ np.linalg.lstsq(subject, exog.to_numpy(), rcond=None)[0]
    for i, name in enumerate(("scs", "drgs", "dual")):
        deviation = np.zeros(exog.shape[1])
        deviation[:3] = -1.0 / 3
        deviation[i] += 1.0
        c = deviation @ np.linalg.pinv(within_x.T @ within_x) @ deviation
        a, b = msb / (n * k), c * mse
        assert rows.loc[name, "se"] ** 2 == pytest.approx(a + b, rel=1e-4)
        hand_df = (a + b) ** 2 / (a ** 2 / (n - 1) + b ** 2 / within_df)
        assert rows.loc[name, "df"] == pytest.approx(hand_df, rel=1e-4), name
        assert n - 1 < rows.loc[name, "df"] < n * k - 5


def test_dropouts_match_statsmodels_with_finite_df():
    smf = pytest.importorskip("statsmodels.formula.api")
    design = williams_design(8, n_periods_kept=2)
    design = design[~((design["subject"] == "03") & (design["period"] == 3))]
    data = design.assign(effect=null_effects(design, 1, np.random.default_rng(7))[:, 0]
                         + 0.5 * (design["condition"] == "DUAL"))
    rows = pd.DataFrame(model_contrasts(fit_crossover(data))).set_index("contrast")
    ref = smf.mixedlm("effect ~ C(condition, Treatment('SCS')) + C(period)", data,
                      groups=data["subject"]).fit(reml=True)
    term = "C(condition, Treatment('SCS'))[T.DUAL]"
    assert rows.loc["dualMinusScs", "estimate"] == pytest.approx(ref.params[term], rel=1e-4)
    # se: the GLS covariance (X'V^-1 X)^-1 at the REML variance components (as lme4 and SAS);
    # statsmodels' cov_params inverts its observed information, 0.2 % apart here with drop-outs
    z = pd.get_dummies(data["subject"]).to_numpy(float)
    v = ref.scale * np.eye(len(data)) + float(ref.cov_re.iloc[0, 0]) * z @ z.T
    gls = sm.GLS(data["effect"].to_numpy(), ref.model.exog, sigma=v).fit()
    assert rows.loc["dualMinusScs", "se"] == pytest.approx(gls.bse[ref.model.exog_names.index(term)],
                                                           rel=1e-4)
    assert rows.loc["dualMinusScs", "se"] == pytest.approx(ref.bse[term], rel=1e-2)
    df = rows.loc["dualMinusScs", "df"]
    assert 8 < df < len(data) - 5 and rows.loc["dualMinusScs", "df_method"] == "satterthwaite"
    t = rows.loc["dualMinusScs", "estimate"] / gls.bse[ref.model.exog_names.index(term)]
    assert rows.loc["dualMinusScs", "p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-3)


def test_closed_form_path_equals_the_production_fits(null_rows):
    """The production path (its own REML fit) agrees with the closed-form path on a subset."""
    design, y, rows = null_rows["design"], null_rows["y"], null_rows["rows"]
    subset = 3
    table = pd.concat([design.assign(node=f"n{r}", pathway="lateral", effect=y[:, r])
                       for r in range(subset)], ignore_index=True)
    fitted = roi_statistics(table).query("level == 'node'")
    for r in range(subset):
        mine = fitted[fitted["node"] == f"n{r}"].set_index("contrast")
        closed = rows[rows["set"] == r].set_index("contrast")
        for col in ("estimate", "se", "stat", "df", "p"):
            np.testing.assert_allclose(mine.loc[closed.index, col].to_numpy(dtype=float),
                                       closed[col].to_numpy(dtype=float), rtol=1e-6, atol=1e-8,
                                       err_msg=f"set {r} {col}")


def test_roi_contrasts_hold_the_nominal_rate(null_rows):
    n, rows = null_rows["n"], null_rows["rows"]
    low, high = binomial_interval(N_SETS)
    null_contrasts = ["scs", "drgs", "dual", "drgsMinusScs", "dualMinusScs", "dualMinusDrgs",
                      "dualMinusMean", "conditionF"]
    rates = {}
    for name in null_contrasts:
        p = rows.loc[rows["contrast"] == name, "p"].to_numpy()
        assert len(p) == N_SETS and np.isfinite(p).all()
        rates[name] = int((p < ALPHA).sum())
    assert all(low <= r <= high for r in rates.values()), (n, rates, (low, high))
    # the period effects are real: their (1 - alpha) intervals must cover the truth
    for later in (2, 3):
        sel = rows[rows["contrast"] == f"period{later}MinusPeriod1"]
        truth = PERIOD_EFFECTS[later - 1] - PERIOD_EFFECTS[0]
        missed = int(((sel["ci_low"] > truth) | (sel["ci_high"] < truth)).sum())
        assert low <= missed <= high, (n, later, missed)
    within = rows[rows["contrast"] == "dualMinusScs"]["df"]
    assert np.allclose(within, 2 * n - 4)


def test_fdr_over_nodes_holds_q(null_rows):
    """Global null, families of 10 nodes: P(any BH discovery) = FDR stays <= q within error."""
    rows = null_rows["rows"].copy()
    rows = rows[~rows["contrast"].str.startswith("period")]
    rows["family"] = rows["set"] // 10
    adjusted = add_fdr(rows, ["contrast", "family"])
    families = adjusted.groupby(["contrast", "family"])
    any_fdr = families["p_fdr"].min() < ALPHA
    any_raw = families["p"].min() < ALPHA
    _, high = binomial_interval(len(any_fdr))
    assert any_fdr.sum() <= high, (any_fdr.mean(), len(any_fdr))
    assert any_raw.mean() > 0.3  # uncorrected: about 1 - 0.95^10 = 40 % of the families


@pytest.mark.parametrize("n", [8, 20])
def test_behaviour_slopes_hold_the_nominal_rate(n):
    rng = np.random.default_rng(3000 + n)
    design = williams_design(n)
    level = rng.normal(50, 15, n)[pd.factorize(design["subject"])[0]]
    design["pain_relief"] = level + rng.normal(0, 10, len(design))
    y = null_effects(design, N_SETS, rng, period_effects=(0.0, 0.0, 0.0))
    groups = design["subject"].to_numpy()
    # the production design of behaviour_model, rebuilt from its within/between columns
    wb = within_between(design, "pain_relief")
    exog = pd.DataFrame({"const": 1.0, "within": wb["within"], "between": wb["between"]})
    reml = closed_form_reml(exog.to_numpy(), groups, y)
    interior = ~reml["boundary"]
    assert interior.mean() > 0.99
    p = {"within": [], "between": []}
    dfs = {"within": set(), "between": set()}
    for r in range(N_SETS):
        fit = random_intercept_fit(exog, groups, reml["beta"][:, r], reml["group_var"][r],
                                   reml["resid_var"][r])
        for term in p:
            row = contrast_test(fit, (exog.columns == term).astype(float), ALPHA)
            p[term].append(row["p"])
            if interior[r]:
                dfs[term].add(round(row["df"], 6))
    assert dfs == {"within": {2 * n - 1}, "between": {n - 2}}  # exact strata df, by hand
    # ... so the tests are the classical ones: the within slope of OLS with subject dummies,
    # the between slope of OLS on the subject means
    subjects = pd.get_dummies(design["subject"]).to_numpy(float)
    within_x = np.column_stack([subjects, wb["within"]])
    means = pd.DataFrame(y).groupby(design["subject"].to_numpy()).mean().to_numpy()
    first = ~design["subject"].duplicated().to_numpy()
    between_x = sm.add_constant(wb["between"].to_numpy()[first])
    for r in np.flatnonzero(interior)[::50]:
        assert p["within"][r] == pytest.approx(
            sm.OLS(y[:, r], within_x).fit().pvalues[-1], rel=1e-8)
        assert p["between"][r] == pytest.approx(
            sm.OLS(means[:, r], between_x).fit().pvalues[-1], rel=1e-8)
    low, high = binomial_interval(N_SETS)
    for term, values in p.items():
        assert low <= int((np.asarray(values) < ALPHA).sum()) <= high, (n, term)
    # statsmodels end to end on two sets agrees
    for r in np.flatnonzero(interior)[:2]:
        fitted = pd.DataFrame(behaviour_model(design.assign(effect=y[:, r]), "pain_relief"))
        fitted = fitted.set_index("term")
        for term in p:
            assert fitted.loc[term, "p"] == pytest.approx(p[term][r], rel=2e-3)
            assert fitted.loc[term, "df"] == pytest.approx(2 * n - 1 if term == "within" else n - 2,
                                                           rel=1e-3)


def test_one_condition_one_sample_is_calibrated():
    """One condition, one map per subject: per node a one-sample t with n - 1 df."""
    n, n_nodes = 8, N_SETS
    rng = np.random.default_rng(11)
    values = rng.normal(0.3, 1.0, size=(n_nodes, n)) - 0.3  # null: mean 0
    table = pd.DataFrame([{"subject": f"{s:02d}", "session": np.nan, "condition": "stim",
                           "period": np.nan, "sequence": np.nan, "node": f"n{j}", "pathway": "lateral",
                           "effect": values[j, s]} for j in range(n_nodes) for s in range(n)])
    out = roi_statistics(table, conditions=("stim",)).query("level == 'node'")
    assert set(out["contrast"]) == {"stim"} and (out["df"] == n - 1).all()
    assert (out["df_method"] == "residual").all() and (out["model"] == "ols").all()
    expected = stats.ttest_1samp(values, 0.0, axis=1).pvalue
    np.testing.assert_allclose(out["p"].to_numpy(), expected, rtol=1e-8)
    low, high = binomial_interval(n_nodes)
    assert low <= int((out["p"] < ALPHA).sum()) <= high
