"""Carry-over and sequence effects in the pathway statistics.

(a) the ROI carry-over model agrees with statsmodels fitted here on the same table (OLS
with subject fixed effects for the within-subject rows, MixedLM / GLS for the condition means); (b) a simulated carry-over after DUAL is detected in the nodes that have it and
not in a control node; (c) on null Williams crossover tables (n = 8 and 20, subject SD 1,
residual SD 0.5, period effects) carryoverF, the adjusted condition contrasts and the
sequence test reject at alpha = 0.05 within the binomial 95 % interval of 500 sets;
(d) the stage writes carryover.tsv and sequence_stats.tsv.

The 500 null fits per sample size get the REML variance components of the condition
means' random-intercept model from a vectorised profile REML (:mod:`tests.support.profile_reml`; carry-over columns have
between-subject parts, so the closed-form ANOVA solution does not apply) and go
through the production code from there (:func:`random_intercept_fit`,
:func:`model_contrasts`); the profile REML is checked against MixedLM.
"""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.glm.second_level.carryover import carryover_terms, previous_conditions
from fmri_pain.pathways.atlas import atlas_from_masks
from fmri_pain.pathways.carryover import carryover_table, unit_notes
from fmri_pain.pathways.run import run_pathway_analysis
from fmri_pain.pathways.sequence import distinct_assignments, sequence_statistics, sequence_test
from fmri_pain.pathways.stats import (crossover_design, fit_crossover, model_contrasts,
                                      random_intercept_fit, roi_statistics)
from fmri_pain.pathways.within import within_subject_fit
from fmri_pain.trial import CONDITIONS
from fmri_pain.bids.naming import pathway_table_name
from tests.support.pathways_fixtures import cube_masks, null_effects, williams_design
from tests.support.profile_reml import profile_reml

ALPHA = 0.05
N_SETS = 500
PERIOD_EFFECTS = (0.4, 0.0, -0.4)
EFFECT = {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}


def _interval(n: int = N_SETS) -> tuple[int, int]:
    low, high = stats.binom.interval(0.95, n, ALPHA)
    return int(low), int(high)


def _carry_table(n: int, rng, delta: float, nodes=("a", "b", "control")) -> pd.DataFrame:
    """Long ROI table: condition + period + subject + delta after DUAL (not in ``control``)."""
    design = williams_design(n)
    prev = previous_conditions(design, CONDITIONS)
    parts = []
    for node in nodes:
        y = null_effects(design, 1, rng, period_effects=PERIOD_EFFECTS)[:, 0]
        y = y + design["condition"].map(EFFECT).to_numpy()
        if node != "control":
            y = y + delta * (prev == "DUAL").to_numpy()
        parts.append(design.assign(node=node, pathway="medial" if node == "control" else "lateral",
                                   effect=y))
    return pd.concat(parts, ignore_index=True)


def test_carryover_model_matches_statsmodels():
    """Within-subject rows equal OLS with subject fixed effects; condition means equal MixedLM."""
    data = _carry_table(12, np.random.default_rng(2), 0.6, nodes=("a",))
    fit = fit_crossover(data, carryover=True)
    rows = pd.DataFrame(model_contrasts(fit)).set_index("contrast")
    prev = previous_conditions(data, CONDITIONS)
    ref_data = data.assign(prevDRGS=(prev == "DRGS").astype(float),
                           prevDUAL=(prev == "DUAL").astype(float))
    ols = smf.ols("effect ~ C(condition, Treatment('SCS')) + C(subject) + C(period) + prevDRGS"
                  " + prevDUAL", ref_data).fit()
    dual = "C(condition, Treatment('SCS'))[T.DUAL]"
    drgs = "C(condition, Treatment('SCS'))[T.DRGS]"
    # carryoverDual = lambda_DUAL - (lambda_SCS + lambda_DRGS) / 2 = b_DUAL - b_DRGS / 2 (SCS reference)
    for name, expr in {"carryoverDual": "prevDUAL - 0.5 * prevDRGS = 0",
                       "carryoverScs": "-0.5 * prevDUAL - 0.5 * prevDRGS = 0",
                       "carryoverDrgs": "prevDRGS - 0.5 * prevDUAL = 0",
                       "dualMinusScs": f"{dual} = 0", "dualMinusDrgs": f"{dual} - {drgs} = 0"}.items():
        ref = ols.t_test(expr)
        row = rows.loc[name]
        assert row["estimate"] == pytest.approx(float(np.squeeze(ref.effect)), rel=1e-6), name
        assert row["se"] == pytest.approx(float(np.squeeze(ref.sd)), rel=1e-6), name
        assert row["p"] == pytest.approx(float(np.squeeze(ref.pvalue)), rel=1e-5), name
        assert row["df"] == ols.df_resid and row["df_method"] == "within-subject"
        assert row["model"] == "ols-subject-fixed"
    f_ref = ols.f_test("prevDRGS = 0, prevDUAL = 0")
    assert rows.loc["carryoverF", "stat"] == pytest.approx(float(np.squeeze(f_ref.fvalue)), rel=1e-6)
    assert rows.loc["carryoverF", "p"] == pytest.approx(float(np.squeeze(f_ref.pvalue)), rel=1e-5)
    assert rows.loc["carryoverF", "df_num"] == 2
    # period contrasts depend on the carry-over coding (period 1 is the only "none" level): with
    # sum-to-zero carry-over, period 3 - period 1 includes the mean carry-over into period 3
    summed = ref_data.assign(cSCS=(prev == "SCS").astype(float) - (prev == "DUAL"),
                             cDRGS=(prev == "DRGS").astype(float) - (prev == "DUAL"))
    ols_sum = smf.ols("effect ~ C(condition) + C(subject) + C(period) + cSCS + cDRGS", summed).fit()
    ref = ols_sum.t_test("C(period)[T.3] = 0")
    assert rows.loc["period3MinusPeriod1", "estimate"] == pytest.approx(float(np.squeeze(ref.effect)),
                                                                          rel=1e-6)
    assert rows.loc["period3MinusPeriod1", "se"] == pytest.approx(float(np.squeeze(ref.sd)), rel=1e-6)
    # the condition means: the random-intercept model with the carry-over columns (REML)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixed = smf.mixedlm("effect ~ 0 + C(condition) + C(period, Sum) + prevDRGS + prevDUAL",
                            ref_data, groups=ref_data["subject"]).fit(reml=True)
    assert rows.loc["dual", "df_method"] == "satterthwaite"  # the mixed model (model column: mixedlm)
    # GLS at the REML variance components, on the production coding (sum-to-zero carry-over,
    # whose cell means differ from the treatment coding's by the mean carry-over)
    z = pd.get_dummies(data["subject"]).to_numpy(float)
    v = mixed.scale * np.eye(len(data)) + float(mixed.cov_re.iloc[0, 0]) * z @ z.T
    exog, _, _ = crossover_design(data, CONDITIONS)
    x = pd.concat([exog, carryover_terms(data, CONDITIONS, exog).columns], axis=1)
    gls = sm.GLS(data["effect"].to_numpy(), x.to_numpy(), sigma=v).fit()
    col = list(x.columns).index("DUAL")
    assert rows.loc["dual", "estimate"] == pytest.approx(gls.params[col], rel=1e-4)
    assert rows.loc["dual", "se"] == pytest.approx(gls.bse[col], rel=1e-4)
    reml = profile_reml(x.to_numpy(), data["subject"], data[["effect"]].to_numpy())
    assert reml["group_var"][0] == pytest.approx(float(mixed.cov_re.iloc[0, 0]), rel=1e-4)
    assert reml["resid_var"][0] == pytest.approx(mixed.scale, rel=1e-4)
    assert fit["group_var"] == pytest.approx(float(mixed.cov_re.iloc[0, 0]), rel=1e-3)


def test_carryover_after_dual_is_detected_where_it_is():
    """delta = 0.8 after DUAL, n = 18: carryoverDual's se is about 0.21 here (subject SD 1,
    residual SD 0.5), so delta = 0.5 is detected only about 55 % of the time; 0.8 about 95 %."""
    rng = np.random.default_rng(11)
    detected = {"a": 0, "b": 0, "control": 0}
    estimates = []
    n_rep = 12
    for _ in range(n_rep):
        table = _carry_table(18, rng, 0.8)
        rows = roi_statistics(table, carryover=True).query("level == 'node'").set_index(
            ["node", "contrast"])
        for node in detected:
            detected[node] += rows.loc[(node, "carryoverF"), "p"] < ALPHA
        estimates += [rows.loc[(node, "carryoverDual"), "estimate"] for node in ("a", "b")]
    assert detected["a"] >= 0.75 * n_rep and detected["b"] >= 0.75 * n_rep, detected
    assert detected["control"] <= 3, detected
    assert (np.array(estimates) > 0).all()
    assert np.mean(estimates) == pytest.approx(0.8, abs=0.15)  # carryoverDual estimates delta


def _null_fits(n: int, seed: int):
    rng = np.random.default_rng(seed)
    design = williams_design(n)
    y = null_effects(design, N_SETS, rng, period_effects=PERIOD_EFFECTS)
    exog, present, period_columns = crossover_design(design, CONDITIONS)
    terms = carryover_terms(design, CONDITIONS, exog)
    assert terms.estimable
    x = pd.concat([exog, terms.columns], axis=1)
    groups = design["subject"].to_numpy()
    reml = profile_reml(x.to_numpy(), groups, y)
    rows = []
    for r in range(N_SETS):
        fit = random_intercept_fit(x, groups, reml["beta"][:, r], reml["group_var"][r],
                                   reml["resid_var"][r])
        fit.update(present=present, period_columns=period_columns, periods=[1, 2, 3],
                   carryover=terms, within=within_subject_fit(y[:, r], x, groups))
        rows += [{**row, "set": r} for row in model_contrasts(fit, ALPHA)]
    return design, y, pd.DataFrame(rows)


@pytest.mark.parametrize("n", [8, 20])
def test_null_carryover_and_sequence_tests_hold_the_nominal_rate(n):
    design, y, rows = _null_fits(n, 2000 + n)
    low, high = _interval()
    rates = {}
    # the within-subject statistics (exact F and t); the condition means of the carry-over model
    # (random intercept, Satterthwaite) measured 5.1-5.6 % over 3000 null sets at n = 8 and 20
    for name in ("carryoverF", "carryoverDual", "carryoverScs", "carryoverDrgs", "dualMinusScs",
                 "drgsMinusScs", "conditionF"):
        p = rows.loc[rows["contrast"] == name, "p"].to_numpy()
        assert len(p) == N_SETS and np.isfinite(p).all()
        rates[name] = int((p < ALPHA).sum())
    # the between-subject sequence test on the subject means of the same null sets
    codes = pd.factorize(design["subject"])[0]
    means = np.stack([y[codes == s].mean(axis=0) for s in range(codes.max() + 1)])
    sequences = design.groupby("subject", sort=False)["sequence"].first().to_numpy()
    res = sequence_test(means, sequences, n_perm=999, random_state=n)
    rates["sequence_perm"] = int((res["p_perm"] < ALPHA).sum())
    rates["sequence_F"] = int((res["p"] < ALPHA).sum())
    assert all(low <= r <= high for r in rates.values()), (n, rates, (low, high))
    assert res["p_perm"].min() >= 1 / res["n_perm"]
    assert res["n_perm"] == min(1000, distinct_assignments(sequences))


def test_sequence_test_logic():
    rng = np.random.default_rng(0)
    labels = np.array(["A", "A", "B", "B", "C", "C"])
    y = rng.normal(size=6)
    res = sequence_test(y, labels, n_perm=999)
    assert res["exhaustive"] and res["n_perm"] == 90  # 6! / (2! 2! 2!)
    ref = stats.f_oneway(y[:2], y[2:4], y[4:])
    assert res["stat"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue)
    # exact: the permutation p is the fraction of the 90 assignments at least as extreme
    from itertools import permutations

    perms = {p for p in permutations(labels.tolist())}
    fs = [stats.f_oneway(*[y[np.array(p) == g] for g in "ABC"]).statistic for p in perms]
    assert res["p_perm"] == pytest.approx(np.mean(np.array(fs) >= ref.statistic - 1e-12))
    # a strong sequence effect: smallest attainable p, never below 1 / (n_perm + 1) when random
    big = np.repeat([0.0, 5.0, 10.0], 4) + rng.normal(0, 0.1, 12)
    res = sequence_test(big, np.repeat(["A", "B", "C"], 4), n_perm=199, random_state=1)
    assert not res["exhaustive"] and res["p_perm"] == pytest.approx(1 / 200)


def test_carryover_table_shift_and_notes():
    table = _carry_table(12, np.random.default_rng(5), 1.5)
    with_c = roi_statistics(table, carryover=True)
    without = roi_statistics(table)
    out = carryover_table(with_c, without, unit_notes(table), ALPHA)
    node = out[out["level"] == "node"].set_index(["node", "contrast"])
    for key in [("a", "dualMinusScs"), ("control", "drgsMinusScs")]:
        w = with_c.set_index(["level", "node", "contrast"]).loc[("node", *key)]
        wo = without.set_index(["level", "node", "contrast"]).loc[("node", *key)]
        assert node.loc[key, "estimate"] == pytest.approx(w["estimate"])
        assert node.loc[key, "estimate_without_carryover"] == pytest.approx(wo["estimate"])
        assert node.loc[key, "shift"] == pytest.approx(w["estimate"] - wo["estimate"])
    assert set(out["contrast"]) == {"drgsMinusScs", "dualMinusScs", "dualMinusDrgs", "dualMinusMean"}
    assert node.loc[("a", "dualMinusScs"), "carryover_p"] < ALPHA
    assert (out["note"] == "").all()
    # one sequence for everyone: not estimable, stated per unit
    one = table[table["sequence"] == table["sequence"].iloc[0]]
    notes = unit_notes(one)
    assert notes and all("carry-over not modelled" in v for v in notes.values())
    stats_one = roi_statistics(one, carryover=True)
    assert "carryoverF" not in set(stats_one["contrast"])
    out_one = carryover_table(stats_one, roi_statistics(one), notes, ALPHA)
    assert out_one["carryover_p"].isna().all() and (out_one["note"] != "").all()


def test_stage_writes_carryover_and_sequence_tables(tmp_path):
    shape, affine = (4, 4, 4), np.diag([4.0, 4.0, 4.0, 1.0])
    masks = cube_masks(tmp_path, shape, affine, {"a": np.s_[0:2, 0:2, 0:2], "control": np.s_[2:4, 2:4, 2:4]})
    atlas = atlas_from_masks(masks, {"a": "lateral", "control": "medial"})
    table = _carry_table(12, np.random.default_rng(8), 1.5, nodes=("a", "control"))
    wide = table.pivot_table(index=["subject", "session", "condition", "period", "sequence"],
                             columns="node", values="effect").reset_index()
    rows = []
    for r in wide.itertuples(index=False):
        data = np.zeros(shape, np.float32)
        data[np.asarray(nib.load(masks["a"]).dataobj) > 0] = r.a
        data[np.asarray(nib.load(masks["control"]).dataobj) > 0] = r.control
        eff = tmp_path / f"sub-{r.subject}_ses-{r.session}_effect.nii.gz"
        var = tmp_path / f"sub-{r.subject}_ses-{r.session}_variance.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), eff)
        nib.save(nib.Nifti1Image(np.ones(shape, np.float32), affine), var)
        rows.append({"subject": r.subject, "session": r.session, "condition": r.condition,
                     "period": r.period, "sequence": r.sequence, "effect": str(eff),
                     "variance": str(var)})
    spec = PathwaysSpec(connectivity=False, decoding=False, behaviour_covariates=())
    outputs = run_pathway_analysis(pd.DataFrame(rows), None, tmp_path / "out", spec, atlas=atlas,
                                   carryover=True)
    roi = pd.read_csv(outputs["roi_stats"], sep="\t", na_values="n/a")
    assert {"carryoverF", "carryoverDual"} <= set(roi["contrast"])
    carry = pd.read_csv(outputs["carryover"], sep="\t", na_values="n/a")
    node = carry[carry["level"] == "node"].set_index(["node", "contrast"])
    assert node.loc[("a", "dualMinusScs"), "carryover_p"] < ALPHA
    seq = pd.read_csv(outputs["sequence_stats"], sep="\t", na_values="n/a")
    assert (seq["contrast"] == "sequenceF").all() and (seq["df_num"] == 5).all()
    assert (seq["p_perm"] >= 1 / (seq["n_perm"])).all()
    ref = sequence_statistics(table[table["node"] == "a"], n_perm=4999, random_state=0)
    assert seq.set_index("node").loc["a", "stat"] == pytest.approx(ref["stat"].iloc[0], rel=1e-4)
    sidecar = json.loads(outputs["carryover"].with_suffix(".json").read_text())
    assert "without carry-over" in sidecar["Description"]
    assert "carry-over" in json.loads(outputs["roi_stats"].with_suffix(".json").read_text())[
        "Description"]
    from fmri_pain.report.methods import pathways_section

    methods = pathways_section(outputs).text
    assert "Between-subject sequence test" in methods and "with and without carry-over" in methods
    from fmri_pain.results import load_results

    res = load_results(tmp_path / "out")
    pd.testing.assert_frame_equal(res.carryover(), carry)
    assert res.carryover("sequence")["stat"].tolist() == pytest.approx(seq["stat"].tolist())
    # without the flag the tables are not written (and none stays stale)
    outputs = run_pathway_analysis(pd.DataFrame(rows), None, tmp_path / "out", spec, atlas=atlas)
    assert "carryover" not in outputs and not (tmp_path / "out/group/pathways" / pathway_table_name("carryover")).exists()


def test_roi_and_voxelwise_carryover_estimates_agree():
    """The ROI within-subject model and the voxelwise repeated model are the same model."""
    from fmri_pain.glm.second_level.models import (compute_group_contrast, fit_second_level,
                                                   repeated_measures_design)
    from fmri_pain.trial import trial_contrasts

    data = _carry_table(12, np.random.default_rng(21), 0.6, nodes=("a",))
    rows = pd.DataFrame(model_contrasts(fit_crossover(data, carryover=True))).set_index("contrast")
    design = repeated_measures_design(data, CONDITIONS, trial_contrasts(), carryover=True)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    imgs = [nib.Nifti1Image(np.full((2, 2, 2), v, np.float32), affine) for v in data["effect"]]
    model = fit_second_level(imgs, design, nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), affine))
    for name in ("carryoverDual", "carryoverScs", "dualMinusScs", "dualMinusMean"):
        maps = compute_group_contrast(model, design, name)
        assert float(np.asanyarray(maps["effect"].dataobj)[0, 0, 0]) == pytest.approx(
            rows.loc[name, "estimate"], rel=1e-5)
        assert float(np.asanyarray(maps["t"].dataobj)[0, 0, 0]) == pytest.approx(
            rows.loc[name, "stat"], rel=1e-4)
    f = compute_group_contrast(model, design, "carryoverF")["F"]
    assert float(np.asanyarray(f.dataobj)[0, 0, 0]) == pytest.approx(rows.loc["carryoverF", "stat"],
                                                                      rel=1e-4)
