"""Non-inferiority, superiority and TOST tests of node contrasts against a margin.

(a) agreement with independent computations: scipy's one-sample t tests of paired differences
shifted by the margin, scipy's noncentral t, and statsmodels' own MixedLM fit of the crossover;
(b) simulator truth and (c) calibration on 500 simulated Williams-crossover ROI tables at n = 8
and 20, whose REML fits come from the closed form (as tests/pathways/test_pathways_calibration.py),
through the production code that turns them into tests (:func:`fit_tests`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import optimize, stats

from fmri_pain.config.equivalence import EquivalenceSpec, EquivalenceTest
from fmri_pain.pathways.equivalence import (
    equivalence_statistics,
    fit_crossover,
    fit_tests,
    noncentral_margin_tests,
    write_equivalence,
)
from fmri_pain.pathways.stats import crossover_design, random_intercept_fit
from fmri_pain.trial import CONDITIONS
from fmri_pain.bids.naming import pathway_table_name
from tests.support.pathways_fixtures import closed_form_reml, cube_masks, null_effects, williams_design

ALPHA = 0.05
N_SETS = 500
LOW, HIGH = (int(v) for v in stats.binom.interval(0.95, N_SETS, ALPHA))  # (16, 35)
REL = 1e-3  # statsmodels' REML optimiser stops within ~1e-4 of the closed-form variances


def _paired_table(n: int, rng, difference: float = 0.2) -> tuple[pd.DataFrame, np.ndarray]:
    """Two conditions, no period: a paired comparison (DRGS - SCS per subject)."""
    intercepts = rng.normal(0, 1.0, n)
    scs = intercepts + rng.normal(0, 0.4, n)
    drgs = intercepts + difference + rng.normal(0, 0.4, n)
    subjects = [f"{i:02d}" for i in range(n)]
    data = pd.DataFrame({"subject": subjects * 2, "condition": ["SCS"] * n + ["DRGS"] * n,
                         "effect": np.r_[scs, drgs]})
    return data, drgs - scs


def _one(fit, data, **test):
    return fit_tests(fit, data, [EquivalenceTest(**test)], ALPHA)[0]


def test_paired_psc_tests_are_one_sided_t_tests_of_shifted_differences():
    data, d = _paired_table(12, np.random.default_rng(3))
    fit = fit_crossover(data, conditions=("SCS", "DRGS"))
    m = 0.3
    ni = _one(fit, data, contrast="drgsMinusScs", kind="non-inferiority", margin=m)
    assert ni["method"] == "t" and ni["df"] == pytest.approx(11, rel=1e-6)
    assert ni["p"] == pytest.approx(stats.ttest_1samp(d + m, 0, alternative="greater").pvalue, rel=REL)
    sup = _one(fit, data, contrast="drgsMinusScs", kind="superiority", margin=0.1)
    assert sup["p"] == pytest.approx(stats.ttest_1samp(d - 0.1, 0, alternative="greater").pvalue,
                                     rel=REL)
    eq = _one(fit, data, contrast="drgsMinusScs", kind="equivalence", margin=m)
    p_low = stats.ttest_1samp(d + m, 0, alternative="greater").pvalue
    p_high = stats.ttest_1samp(d - m, 0, alternative="less").pvalue
    assert (eq["p_low"], eq["p_high"]) == pytest.approx((p_low, p_high), rel=REL)
    assert eq["p"] == pytest.approx(max(p_low, p_high), rel=REL)
    low, high = stats.t.interval(0.90, 11, d.mean(), stats.sem(d))  # 1 - 2 alpha
    assert (eq["ci_low"], eq["ci_high"]) == pytest.approx((low, high), rel=REL)
    assert eq["rejected"] == (max(p_low, p_high) < ALPHA) == (-m < low and high < m)
    assert eq["conclusion"] == ("equivalent" if eq["rejected"] else "equivalence not shown")


def test_paired_dz_tests_use_the_noncentral_t_with_ncp_margin_sqrt_n():
    n, m = 12, 0.4
    data, d = _paired_table(n, np.random.default_rng(4), difference=0.1)
    fit = fit_crossover(data, conditions=("SCS", "DRGS"))
    t_obs = d.mean() / stats.sem(d)
    row = _one(fit, data, contrast="drgsMinusScs", kind="equivalence", margin=m, unit="dz")
    assert row["method"] == "noncentral-t"
    assert row["sd_contrast"] == pytest.approx(d.std(ddof=1), rel=REL)
    assert row["estimate_unit"] == pytest.approx(d.mean() / d.std(ddof=1), rel=REL)
    assert row["p_low"] == pytest.approx(stats.nct.sf(t_obs, n - 1, -m * np.sqrt(n)), rel=REL)
    assert row["p_high"] == pytest.approx(stats.nct.cdf(t_obs, n - 1, m * np.sqrt(n)), rel=REL)
    # the 90 % interval of d_z inverts the noncentral t (computed here with a root finder)
    low = optimize.brentq(lambda dz: stats.nct.sf(t_obs, n - 1, dz * np.sqrt(n)) - ALPHA, -5, 5)
    high = optimize.brentq(lambda dz: stats.nct.cdf(t_obs, n - 1, dz * np.sqrt(n)) - ALPHA, -5, 5)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=REL)


def test_crossover_tests_match_statsmodels_mixedlm():
    """Williams crossover with periods: estimate and se from statsmodels' own REML fit, the
    within-subject ANOVA df (n - 1)(k - 1) - (k - 1), tests by scipy."""
    n, m = 12, 0.25
    design = williams_design(n)
    data = design.assign(effect=null_effects(design, 1, np.random.default_rng(8))[:, 0]
                         + 0.15 * (design["condition"] == "DRGS"))
    sm = smf.mixedlm("effect ~ 0 + C(condition) + C(period, Sum)", data, groups=data["subject"]).fit(
        reml=True)
    w = pd.Series(0.0, index=sm.fe_params.index)
    w["C(condition)[DRGS]"], w["C(condition)[SCS]"] = 1.0, -1.0
    est = float(w @ sm.fe_params)
    se = float(np.sqrt(w @ sm.cov_params().loc[w.index, w.index] @ w))
    df = (n - 1) * 2 - 2
    fit = fit_crossover(data)
    ni = _one(fit, data, contrast="drgsMinusScs", kind="non-inferiority", margin=m)
    assert (ni["estimate"], ni["se"], ni["df"]) == pytest.approx((est, se, df), rel=1e-4)
    assert ni["p"] == pytest.approx(stats.t.sf((est + m) / se, df), rel=1e-3)
    dz = _one(fit, data, contrast="drgsMinusScs", kind="non-inferiority", margin=0.5, unit="dz")
    sd = np.sqrt(2 * sm.scale)  # within-subject SD of a difference
    assert dz["method"] == "noncentral-t" and dz["sd_contrast"] == pytest.approx(sd, rel=1e-4)
    assert dz["p"] == pytest.approx(stats.nct.sf(est / se, df, -0.5 * sd / se), rel=1e-3)
    # a drop-out: no longer complete, the dz margin is converted with the estimated SD
    dropped = data.iloc[:-1]
    row = _one(fit_crossover(dropped), dropped, contrast="drgsMinusScs", kind="non-inferiority",
               margin=0.5, unit="dz")
    assert row["method"] == "t-plugin-sd"
    assert row["margin_psc"] == pytest.approx(0.5 * row["sd_contrast"])
    assert row["p"] == pytest.approx(stats.t.sf((row["estimate"] + row["margin_psc"]) / row["se"],
                                                row["df"]), rel=1e-6)


def test_noncentral_tests_at_margin_zero_are_central_t_tests():
    res = noncentral_margin_tests(1.9, 10.0, np.sqrt(11), "superiority", 0.0)
    assert float(res["p"]) == pytest.approx(stats.t.sf(1.9, 10), rel=1e-9)


def _sets(n: int, difference: float, residual_sd: float, seed: int) -> list[dict]:
    """fit_tests on N_SETS crossover tables with DRGS - SCS = ``difference`` (closed-form REML)."""
    rng = np.random.default_rng(seed)
    design = williams_design(n)
    y = null_effects(design, N_SETS, rng, residual_sd=residual_sd)
    y += difference * (design["condition"] == "DRGS").to_numpy()[:, None]
    exog, present, period_columns = crossover_design(design, CONDITIONS)
    groups = design["subject"].to_numpy()
    reml = closed_form_reml(exog.to_numpy(), groups, y)
    tests = [EquivalenceTest("drgsMinusScs", kind, 0.5, unit) for kind in
             ("non-inferiority", "equivalence") for unit in ("psc", "dz")]
    tests.append(EquivalenceTest("drgsMinusScs", "superiority", 0.2, "psc"))
    out = []
    for r in range(N_SETS):
        fit = random_intercept_fit(exog, groups, reml["beta"][:, r], reml["group_var"][r],
                                   reml["resid_var"][r])
        fit.update(present=present, period_columns=period_columns, periods=[1, 2, 3])
        data = design.assign(effect=y[:, r])
        out += fit_tests(fit, data, tests, ALPHA)
    return out


def _rate(rows, kind, unit="psc") -> int:
    return sum(r["rejected"] for r in rows if r["kind"] == kind and r["unit"] == unit)


@pytest.mark.parametrize("n", [8, 20])
def test_calibration_at_the_margin(n):
    """At D = -margin non-inferiority rejects at 5 % (binomial 95 % interval of 500 tables), in
    psc (t) and in dz (noncentral t, D = -margin x within-subject SD); TOST at D = +-margin at
    most at 5 %; superiority at D = margin at 5 %."""
    residual_sd = 0.5
    rows = _sets(n, -0.5, residual_sd, 10 + n)
    assert LOW <= _rate(rows, "non-inferiority") <= HIGH
    assert _rate(rows, "equivalence") <= HIGH
    sd = np.sqrt(2) * residual_sd  # true within-subject SD of DRGS - SCS
    rows = _sets(n, -0.5 * sd, residual_sd, 60 + n)
    methods = [r["method"] for r in rows if r["unit"] == "dz"]
    assert methods.count("noncentral-t") / len(methods) > 0.98  # the others: REML at its boundary
    assert LOW <= _rate(rows, "non-inferiority", "dz") <= HIGH
    assert _rate(rows, "equivalence", "dz") <= HIGH
    rows = _sets(n, 0.5, residual_sd, 30 + n)
    assert _rate(rows, "equivalence") <= HIGH
    rows = _sets(n, 0.2, residual_sd, 40 + n)
    assert LOW <= _rate(rows, "superiority") <= HIGH


def test_truth_inside_the_margin_is_declared_and_inferiority_is_not():
    """n = 16: D = 0 with margin 0.5 is non-inferior and equivalent most of the time; a true
    D = -1.0 is declared non-inferior at no more than alpha."""
    rows = _sets(16, 0.0, 0.3, 50)
    assert _rate(rows, "non-inferiority") / N_SETS > 0.95
    assert _rate(rows, "equivalence") / N_SETS > 0.9
    rows = _sets(16, -1.0, 0.3, 51)
    assert _rate(rows, "non-inferiority") <= HIGH
    assert _rate(rows, "equivalence") == 0


def _effects(n: int, rng) -> pd.DataFrame:
    design = williams_design(n)
    frames = []
    for node, pathway, diff in (("S1_leg_contra", "lateral", 0.0), ("ACC", "medial", -1.0)):
        y = null_effects(design, 1, rng, residual_sd=0.3)[:, 0] + diff * (design["condition"] == "DRGS")
        frames.append(design.assign(node=node, pathway=pathway, effect=y))
    return pd.concat(frames, ignore_index=True)


def test_table_per_node_pathway_and_index_and_its_files(tmp_path):
    effects = _effects(16, np.random.default_rng(2))
    section = EquivalenceSpec(tests=(EquivalenceTest("drgsMinusScs", "non-inferiority", 0.5),
                                     EquivalenceTest("dualMinusScs", "equivalence", 0.5)), maps=False)
    table = equivalence_statistics(effects, section.tests, alpha=ALPHA)
    assert list(table[["level", "node"]].drop_duplicates().itertuples(index=False, name=None)) == [
        ("node", "S1_leg_contra"), ("node", "ACC"), ("pathway", "lateral"), ("pathway", "medial"),
        ("index", "lateral_minus_medial")]
    node = table[(table["node"] == "S1_leg_contra") & (table["kind"] == "non-inferiority")].iloc[0]
    again = _one(fit_crossover(effects[effects["node"] == "S1_leg_contra"]),
                 effects[effects["node"] == "S1_leg_contra"], contrast="drgsMinusScs",
                 kind="non-inferiority", margin=0.5)
    assert node["p"] == pytest.approx(again["p"]) and node["conclusion"] == "non-inferior"
    acc = table[(table["node"] == "ACC") & (table["kind"] == "non-inferiority")].iloc[0]
    assert acc["conclusion"] == "non-inferiority not shown"
    outputs = write_equivalence(effects, section, tmp_path, conditions=CONDITIONS, parameters={})
    assert (tmp_path / pathway_table_name("equivalence")).is_file()
    assert outputs["equivalence_drgsMinusScs_noninferiority"].name == \
        "contrast-drgsMinusScs_desc-noninferiority_margins.png"
    sidecar = json.loads((tmp_path / pathway_table_name("equivalence", ".json")).read_text(), parse_constant=pytest.fail)
    assert sidecar["Parameters"]["tests"][1] == {"contrast": "dualMinusScs", "kind": "equivalence",
                                                 "margin": 0.5, "unit": "psc"}
    assert "90% confidence intervals" in sidecar["Description"]
    read = pd.read_csv(tmp_path / pathway_table_name("equivalence"), sep="\t")
    assert len(read) == 10 and read["p"].between(0, 1).all()


def test_a_contrast_the_unit_cannot_estimate_is_noted_not_dropped():
    data, _ = _paired_table(8, np.random.default_rng(1))
    row = _one(fit_crossover(data, conditions=("SCS", "DRGS")), data, contrast="dualMinusScs",
               kind="equivalence", margin=0.5)
    assert row["conclusion"] == "not tested" and "dualMinusScs cannot be estimated" in row["note"]


def test_pathway_stage_writes_the_table_and_removes_it_when_no_test_is_asked(tmp_path):
    """run_pathway_analysis with the ``equivalence`` section, on 12 subjects' condition maps
    whose S1 node has DRGS = SCS and whose ACC node has DRGS - SCS = -1 (margin 0.5)."""
    import nibabel as nib

    from fmri_pain.config.pathways import PathwaysSpec
    from fmri_pain.pathways.atlas import atlas_from_masks
    from fmri_pain.pathways.run import run_pathway_analysis

    shape, affine = (6, 6, 6), np.diag([4.0, 4.0, 4.0, 1.0])
    masks = cube_masks(tmp_path, shape, affine, {"S1": np.s_[1:3, 1:3, 1:3], "ACC": np.s_[3:5, 3:5, 3:5]})
    atlas = atlas_from_masks(masks, {"S1": "lateral", "ACC": "medial"})
    design = williams_design(12)
    rng = np.random.default_rng(7)
    rows = []
    for i, row in design.iterrows():
        effect = np.full(shape, 1.0 + rng.normal(0, 0.2), np.float32)
        if row["condition"] == "DRGS":
            effect[3:5, 3:5, 3:5] -= 1.0
        effect += rng.normal(0, 0.05, shape).astype(np.float32)
        path = tmp_path / f"sub-{row['subject']}_ses-{row['session']}_effect.nii.gz"
        nib.save(nib.Nifti1Image(effect, affine), path)
        rows.append({**row.to_dict(), "effect": str(path), "variance": np.nan})
    maps = pd.DataFrame(rows)
    spec = PathwaysSpec(connectivity=False, decoding=False, behaviour_covariates=())
    section = EquivalenceSpec(tests=(EquivalenceTest("drgsMinusScs", "non-inferiority", 0.5),),
                              maps=False)
    outputs = run_pathway_analysis(maps, None, tmp_path, spec, atlas=atlas, equivalence=section)
    table = pd.read_csv(outputs["equivalence"], sep="\t").set_index("node")
    assert table.loc["S1", "conclusion"] == "non-inferior"
    assert table.loc["ACC", "conclusion"] == "non-inferiority not shown"
    assert table.loc["ACC", "estimate"] == pytest.approx(-1.0, abs=0.05)
    assert outputs["equivalence_drgsMinusScs_noninferiority"].is_file()
    outputs = run_pathway_analysis(maps, None, tmp_path, spec, atlas=atlas)
    assert "equivalence" not in outputs
    assert not list((tmp_path / "group" / "pathways").glob("equivalence*"))
