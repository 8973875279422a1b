"""ROI mixed models, FDR, brain-behaviour and decoding on synthetic data with known answers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from fmri_pain.pathways.behaviour import behaviour_statistics
from fmri_pain.pathways.decoding import decode, mirror_x
from fmri_pain.pathways.roi import extract_roi_effects, load_map
from fmri_pain.pathways.stats import fit_crossover, model_contrasts, roi_statistics

SEQUENCES = [("SCS", "DRGS", "DUAL"), ("DRGS", "DUAL", "SCS"), ("DUAL", "SCS", "DRGS"),
             ("SCS", "DUAL", "DRGS"), ("DRGS", "SCS", "DUAL"), ("DUAL", "DRGS", "SCS")]


def crossover_table(means, n_subjects=12, period=-0.3, seed=0, nodes=("a",)):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        u = rng.normal(0, 0.5)
        seq = SEQUENCES[i % 6]
        for p, c in enumerate(seq, 1):
            for node in nodes:
                rows.append({"subject": f"{i:02d}", "session": c.lower(), "condition": c, "period": p,
                             "sequence": "-".join(seq), "node": node,
                             "pathway": "medial" if node == "c" else "lateral",
                             "effect": means[node][c] + period * (p - 1) + u + rng.normal(0, 0.3),
                             "pain_relief": 30 + 10 * p + rng.normal(0, 1)})
    return pd.DataFrame(rows)


def test_contrasts_match_treatment_coded_statsmodels_fit():
    smf = pytest.importorskip("statsmodels.formula.api")
    data = crossover_table({"a": {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}})
    fit = fit_crossover(data)
    rows = pd.DataFrame(model_contrasts(fit)).set_index("contrast")
    ref = smf.mixedlm("effect ~ C(condition, Treatment('SCS')) + C(period)", data,
                      groups=data["subject"]).fit(reml=True)
    for name, term in (("dualMinusScs", "C(condition, Treatment('SCS'))[T.DUAL]"),
                       ("drgsMinusScs", "C(condition, Treatment('SCS'))[T.DRGS]"),
                       ("period3MinusPeriod1", "C(period)[T.3]")):
        assert rows.loc[name, "estimate"] == pytest.approx(ref.params[term], rel=1e-5)
        assert rows.loc[name, "se"] == pytest.approx(ref.bse[term], rel=1e-4)
        # statsmodels refers z to the normal; the table to t with the within-subject ANOVA df:
        # 12 complete subjects, 3 conditions, 3 periods -> (12 - 1)(3 - 1) - 2 = 20
        assert rows.loc[name, "df"] == pytest.approx(20, rel=1e-6)
        assert rows.loc[name, "p"] == pytest.approx(2 * scipy_stats.t.sf(abs(ref.tvalues[term]), 20),
                                                    rel=1e-3)
        assert rows.loc[name, "p"] > ref.pvalues[term]
    # DUAL - DRGS: the difference of the two treatment coefficients
    assert rows.loc["dualMinusDrgs", "estimate"] == pytest.approx(
        ref.params["C(condition, Treatment('SCS'))[T.DUAL]"] - ref.params["C(condition, Treatment('SCS'))[T.DRGS]"])
    assert rows.loc["dualMinusMean", "estimate"] == pytest.approx(
        ref.params["C(condition, Treatment('SCS'))[T.DUAL]"] - ref.params["C(condition, Treatment('SCS'))[T.DRGS]"] / 2)
    assert rows.loc["conditionF", "p"] < 1e-10 and rows.loc["period3MinusPeriod1", "estimate"] < 0
    assert 0.95 < rows.loc["dualMinusScs", "estimate"] < 2.05


def test_fdr_over_nodes_and_dropouts():
    means = {"a": {"SCS": 1, "DRGS": 1, "DUAL": 2}, "b": {"SCS": 1, "DRGS": 1, "DUAL": 1},
             "c": {"SCS": 0, "DRGS": 0, "DUAL": 0}}
    data = crossover_table(means, nodes=tuple(means), seed=1)
    data = data[~((data["subject"] == "00") & (data["condition"] == "DUAL"))]  # a drop-out
    stats = roi_statistics(data)
    node = stats[(stats["level"] == "node") & (stats["contrast"] == "dualMinusScs")].set_index("node")
    assert node.loc["a", "p_fdr"] < 0.001 and node.loc["c", "p_fdr"] > 0.05
    from statsmodels.stats.multitest import multipletests
    assert np.allclose(node["p_fdr"], multipletests(node["p"], method="fdr_bh")[1])
    assert (node["n_obs"] == 35).all()
    assert {"node", "pathway", "index"} == set(stats["level"])
    index = stats[(stats["level"] == "index") & (stats["contrast"] == "dual")]["estimate"].iloc[0]
    assert index == pytest.approx(1.5, abs=0.3)  # lateral mean (2 + 1) / 2 minus medial 0


def test_two_conditions_only():
    data = crossover_table({"a": {"SCS": 1.0, "DRGS": 2.0, "DUAL": 0}})
    data = data[data["condition"] != "DUAL"]
    rows = pd.DataFrame(model_contrasts(fit_crossover(data))).set_index("contrast")
    assert set(rows.index) >= {"scs", "drgs", "drgsMinusScs"} and "conditionF" not in rows.index
    assert rows.loc["drgsMinusScs", "estimate"] == pytest.approx(1.0, abs=0.3)


def test_behaviour_within_and_between_slopes():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(20):
        level = rng.normal(50, 15)  # subject's usual relief: between slope 0.02
        for s in range(3):
            relief = level + rng.normal(0, 10)  # session deviation: within slope 0.05
            effect = 0.02 * (level - 50) + 0.05 * (relief - level) + rng.normal(0, 0.05)
            rows.append({"subject": f"{i:02d}", "session": f"s{s}", "condition": "SCS", "period": s + 1,
                         "node": "a", "pathway": "lateral", "effect": effect, "pain_relief": relief})
    table = behaviour_statistics(pd.DataFrame(rows), ["pain_relief", "vas_pain"])
    node = table[table["level"] == "node"].set_index("term")
    assert node.loc["within", "estimate"] == pytest.approx(0.05, abs=0.01)
    assert node.loc["between", "estimate"] == pytest.approx(0.02, abs=0.01)
    assert set(table["covariate"]) == {"pain_relief"}


def test_decoding_within_subject_permutations():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 2)
    y = np.tile(["A", "B"], 8)
    signal = rng.normal(size=(16, 40)) + 1.5 * (y == "B")[:, None] * (np.arange(40) < 10)
    noise = rng.normal(size=(16, 40))
    good = decode(signal, y, groups, n_permutations=30)
    null = decode(noise, y, groups, n_permutations=30)
    assert good["accuracy"] >= 0.9 and good["p_perm"] < 0.05
    assert null["p_perm"] > 0.05 and good["coef"].shape == (1, 40)


def test_roi_extraction_and_errors(tmp_path):
    from fmri_pain.pathways.atlas import atlas_from_masks

    affine = np.diag([4.0, 4, 4, 1])
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "m.nii.gz")
    atlas = atlas_from_masks({"roi": tmp_path / "m.nii.gz"})
    eff = np.zeros((6, 6, 6), np.float32)
    eff[1:3, 1:3, 1:3] = np.arange(8).reshape(2, 2, 2)
    var = np.where(labels > 0, 2.0, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(eff, affine), tmp_path / "e.nii.gz")
    nib.save(nib.Nifti1Image(var, affine), tmp_path / "v.nii.gz")
    maps = pd.DataFrame([{"subject": "01", "session": "scs", "condition": "SCS", "period": 1,
                          "sequence": "SCS-DRGS-DUAL", "effect": str(tmp_path / "e.nii.gz"),
                          "variance": str(tmp_path / "v.nii.gz"), "vas_pain": 4.0}])
    out = extract_roi_effects(maps, lambda side: atlas)
    assert out.loc[0, "effect"] == pytest.approx(3.5) and out.loc[0, "effect_median"] == pytest.approx(3.5)
    assert out.loc[0, "variance"] == pytest.approx(2.0) and out.loc[0, "n_voxels"] == 8
    assert out.loc[0, "vas_pain"] == 4.0
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.nii\.gz.*sub-02 ses-dual"):
        load_map(tmp_path / "empty.nii.gz", "02", "dual")
    # mirroring swaps hemispheres about x = 0
    data = np.zeros((10, 4, 4), np.float32)
    data[1] = 1
    img = nib.Nifti1Image(data, np.array([[2.0, 0, 0, -9], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]))
    assert np.asarray(mirror_x(img).dataobj)[8].mean() == pytest.approx(1.0)
