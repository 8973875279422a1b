"""Carry-over in the repeated-measures maps: coding, algebra, agreement with statsmodels, outputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from fmri_pain.config.spec import spec_from_dict
from fmri_pain.glm.second_level.carryover import carryover_terms, previous_conditions
from fmri_pain.glm.second_level.models import (compute_group_contrast, fit_second_level,
                                               repeated_measures_design)
from fmri_pain.trial import CONDITIONS, trial_contrasts, williams_sequences
from tests.glm.second_level.test_group_honesty import make_trial
from tests.support.group import run_group_glm
from tests.glm.second_level.test_second_level import _images

EFFECT = {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}


def _rows(n_subjects: int, sequences=None) -> pd.DataFrame:
    sequences = sequences or williams_sequences()
    rows = []
    for s in range(n_subjects):
        seq = sequences[s % len(sequences)]
        for period, cond in enumerate(seq, start=1):
            rows.append({"subject": f"{s + 1:02d}", "condition": cond, "period": period,
                         "sequence": "-".join(seq)})
    return pd.DataFrame(rows)


def test_previous_condition_from_sequence_or_the_period_before():
    rows = _rows(6)
    prev = previous_conditions(rows, CONDITIONS)
    for (_, row), p in zip(rows.iterrows(), prev):
        seq = row["sequence"].split("-")
        assert p == ("" if row["period"] == 1 else seq[row["period"] - 2])
    # without sequences: the same subject's condition of the period before
    assert list(previous_conditions(rows.drop(columns="sequence"), CONDITIONS)) == list(prev)


def test_carryover_dual_estimates_the_delta_after_dual():
    """Noise-free: y = condition + period + subject + delta after DUAL; the contrasts recover it."""
    delta = 0.7
    rows = _rows(12)
    prev = previous_conditions(rows, CONDITIONS)
    rng = np.random.default_rng(1)
    subject = rows["subject"].map({s: rng.normal() for s in rows["subject"].unique()})
    y = (rows["condition"].map(EFFECT) + 0.3 * rows["period"] + subject
         + delta * (prev == "DUAL")).to_numpy(float)
    design = repeated_measures_design(rows, CONDITIONS, trial_contrasts(), carryover=True)
    assert [c for c in design.design.columns if c.startswith("carryover_")] == [
        "carryover_SCS", "carryover_DRGS"]
    assert design.stat_type("carryoverF") == "F" and design.degrees_of_freedom("carryoverF")[0] == 2
    beta = np.linalg.lstsq(design.design.to_numpy(), y, rcond=None)[0]
    est = {k: float(np.asarray(w) @ beta) for k, w in design.contrasts.items() if np.ndim(w) == 1}
    assert est["carryoverDual"] == pytest.approx(delta, abs=1e-10)
    assert est["carryoverScs"] == pytest.approx(-delta / 2, abs=1e-10)
    assert est["carryoverDrgs"] == pytest.approx(-delta / 2, abs=1e-10)
    assert est["dualMinusScs"] == pytest.approx(1.5, abs=1e-10)  # adjusted for carry-over
    assert est["drgsMinusScs"] == pytest.approx(0.5, abs=1e-10)
    # without the term the condition contrasts absorb part of the carry-over
    plain = repeated_measures_design(rows, CONDITIONS, trial_contrasts())
    beta0 = np.linalg.lstsq(plain.design.to_numpy(), y, rcond=None)[0]
    assert abs(plain.contrasts["dualMinusScs"] @ beta0 - 1.5) > 0.05
    assert "carry-over" in design.terms and "carry-over" not in plain.terms
    assert not [c for c in design.covariates if c.startswith("carryover")]


def test_voxelwise_carryover_statistics_match_statsmodels():
    rng = np.random.default_rng(4)
    rows = _rows(12)
    prev = previous_conditions(rows, CONDITIONS)
    subject = rows["subject"].map({s: rng.normal() for s in rows["subject"].unique()})
    y = (rows["condition"].map(EFFECT) + 0.3 * rows["period"] + subject + 0.6 * (prev == "DUAL")
         + rng.normal(0, 0.5, len(rows))).to_numpy(float)
    design = repeated_measures_design(rows, CONDITIONS, trial_contrasts(), carryover=True)
    mask = nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.diag([4, 4, 4, 1]))
    model = fit_second_level(_images(y, shape=(3, 3, 3)), design, mask)
    # independent model: treatment-coded previous condition (SCS reference; period 1 rows 0)
    data = rows.assign(y=y, prevDRGS=(prev == "DRGS").astype(float),
                       prevDUAL=(prev == "DUAL").astype(float))
    ols = smf.ols("y ~ 0 + C(condition) + C(subject) + C(period) + prevDRGS + prevDUAL", data).fit()
    f_ref = float(np.squeeze(ols.f_test("prevDRGS = 0, prevDUAL = 0").fvalue))
    f_img = compute_group_contrast(model, design, "carryoverF")["F"]
    assert np.asanyarray(f_img.dataobj)[0, 0, 0] == pytest.approx(f_ref, rel=1e-5)
    # carryoverDual = lambda_DUAL - (lambda_SCS + lambda_DRGS) / 2 = b_DUAL - b_DRGS / 2
    ref = ols.t_test("prevDUAL - 0.5 * prevDRGS = 0")
    maps = compute_group_contrast(model, design, "carryoverDual")
    assert np.asanyarray(maps["effect"].dataobj)[0, 0, 0] == pytest.approx(
        float(np.squeeze(ref.effect)), rel=1e-5)
    assert np.asanyarray(maps["t"].dataobj)[0, 0, 0] == pytest.approx(
        float(np.squeeze(ref.tvalue)), rel=1e-5)
    t_ref = ols.t_test("C(condition)[DUAL] - C(condition)[SCS] = 0").tvalue.item()
    t_img = compute_group_contrast(model, design, "dualMinusScs")["t"]
    assert np.asanyarray(t_img.dataobj)[0, 0, 0] == pytest.approx(t_ref, rel=1e-5)


def test_carryover_not_estimable_is_a_note():
    # every subject on one sequence: the previous condition is fixed by the period
    rows = _rows(6, williams_sequences()[:1])
    design = repeated_measures_design(rows, CONDITIONS, trial_contrasts(), carryover=True)
    assert not any(c.startswith("carryover") for c in design.contrasts)
    assert any(n.startswith("carry-over not modelled") for n in design.notes), design.notes
    # unknown periods: a note, not a silent drop
    terms = carryover_terms(rows.assign(period=np.nan), CONDITIONS, pd.DataFrame(index=rows.index))
    assert not terms.estimable and "unknown" in terms.notes[0]


def test_run_group_writes_carryover_sequence_maps_and_shift(tmp_path):
    spec = spec_from_dict({"group": {"carryover": True}})
    runs = make_trial(tmp_path, 12, spec)
    result = run_group_glm(tmp_path, runs, spec)
    written = {(m.route, m.contrast): m for m in result.maps}
    for name in ("carryoverF", "carryoverDual", "carryoverScs", "dualMinusScs"):
        assert ("repeated", name) in written, name
    entry = written[("repeated", "carryoverF")]
    assert entry.stat_type == "F" and entry.dof[0] == 2
    sidecar = json.loads(entry.paths["F"].with_name(
        entry.paths["F"].name.replace(".nii.gz", ".json")).read_text())
    assert "carry-over" in sidecar["ModelTerms"]
    # the shift summary: recorded per condition contrast, and in the sidecar of its maps
    shift = result.carryover_shift.set_index("contrast")
    assert {"drgsMinusScs", "dualMinusScs", "dualMinusDrgs", "dualMinusMean"} <= set(shift.index)
    assert (shift["max_abs_shift"] >= shift["median_abs_shift"]).all()
    t_path = written[("repeated", "dualMinusScs")].paths["t"]
    meta = json.loads(t_path.with_name(t_path.name.replace(".nii.gz", ".json")).read_text())
    assert meta["CarryoverShift"]["MaxAbsShift"] == pytest.approx(shift.loc["dualMinusScs",
                                                                             "max_abs_shift"])
    # the between-subject sequence route
    seq = written[("sequence", "sequenceF")]
    assert seq.stat_type == "F" and seq.dof == [5, 6] and seq.n_maps == 12
    assert all(p.parent.name == "sequence" for p in seq.images)
    # its F equals a one-way ANOVA of the subject means across sequences at a voxel
    from scipy import stats

    means = np.array([np.asanyarray(nib.load(p).dataobj)[2, 3, 1] for p in seq.images])
    groups = seq.design.rows["sequence"].to_numpy()
    f_ref = stats.f_oneway(*[means[groups == g] for g in np.unique(groups)]).statistic
    f_img = np.asanyarray(nib.load(seq.paths["F"]).dataobj)[2, 3, 1]
    assert f_img == pytest.approx(f_ref, rel=1e-4)


def test_previous_condition_of_a_dropout_comes_from_its_sequence():
    rows = _rows(6)
    gone = (rows["subject"] == "02") & (rows["period"] == 2)
    prev = previous_conditions(rows[~gone], CONDITIONS)
    seq = rows.loc[rows["subject"] == "02", "sequence"].iloc[0].split("-")
    last = (rows[~gone]["subject"] == "02") & (rows[~gone]["period"] == 3)
    assert prev[last].item() == seq[1]  # the treatment was given even though its scan is missing
    # without a sequence the period before is unknown: a note, not a guess
    terms = carryover_terms(rows[~gone].drop(columns="sequence"), CONDITIONS,
                            pd.DataFrame(index=rows[~gone].index))
    assert not terms.estimable and "unknown" in terms.notes[0]


@pytest.mark.parametrize("n", [8, 20])
def test_null_voxels_hold_the_nominal_rate(n):
    """500 null voxels (subject SD 1, residual SD 0.5, period effects, Williams sequences):
    carryoverF, carryoverDual and sequenceF reject at 0.05 within the binomial 95 % interval."""
    from scipy import stats

    from fmri_pain.glm.second_level.sequence import sequence_design
    from tests.support.pathways_fixtures import null_effects, williams_design

    rng = np.random.default_rng(500 + n)
    rows = williams_design(n)
    y = null_effects(rows, 500, rng)
    shape, affine = (10, 10, 5), np.diag([4.0, 4.0, 4.0, 1.0])
    mask = nib.Nifti1Image(np.ones(shape, np.uint8), affine)
    imgs = [nib.Nifti1Image(v.reshape(shape).astype(np.float32), affine) for v in y]
    design = repeated_measures_design(rows, CONDITIONS, trial_contrasts(), carryover=True)
    model = fit_second_level(imgs, design, mask)
    low, high = (int(v) for v in stats.binom.interval(0.95, 500, 0.05))
    counts = {}
    for name in ("carryoverF", "carryoverDual", "dualMinusScs"):
        p = np.asanyarray(compute_group_contrast(model, design, name)["p"].dataobj).ravel()
        if design.stat_type(name) == "t":  # nilearn's p map is one-sided
            p = 2 * np.minimum(p, 1 - p)
        counts[name] = int((p < 0.05).sum())
    codes = pd.factorize(rows["subject"])[0]
    means = np.stack([y[codes == s].mean(axis=0) for s in range(codes.max() + 1)])
    subjects = rows.groupby("subject", sort=False)["sequence"].first().reset_index()
    seq = sequence_design(subjects)
    seq_model = fit_second_level([nib.Nifti1Image(m.reshape(shape).astype(np.float32), affine)
                                  for m in means], seq, mask)
    p = np.asanyarray(compute_group_contrast(seq_model, seq, "sequenceF")["p"].dataobj).ravel()
    counts["sequenceF"] = int((p < 0.05).sum())
    assert all(low <= c <= high for c in counts.values()), (n, counts, (low, high))
