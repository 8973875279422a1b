"""The responder analysis through the pathway stage: tables, sidecars, report, and a recorded skip.

A hand-made dataset: 10 subjects x 2 conditions, two nodes; in SCS the five
responders (pain_relief >= 50) have node ``a`` higher by 2, node ``b`` carries no
difference. ROI extraction runs on real images; connectivity, behaviour and
decoding are switched off.
"""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.config.responders import ResponderRule, RespondersSpec
from fmri_pain.pathways.atlas import atlas_from_masks
from fmri_pain.pathways.run import run_pathway_analysis
from fmri_pain.report.pathways import pathway_report_section
from fmri_pain.bids.naming import pathway_table_name
from tests.pathways.test_pathways_one_condition import _strict
from tests.support.pathways_fixtures import cube_masks

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SPEC = PathwaysSpec(n_permutations=199, connectivity=False, decoding=False, behaviour_covariates=())
RULE = RespondersSpec(rules=(ResponderRule("pain_relief", at_least=50),))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("responders")
    rng = np.random.default_rng(7)
    shape = (6, 6, 6)
    masks = cube_masks(root, shape, AFFINE, {"a": np.s_[1:3, 1:3, 1:3], "b": np.s_[3:5, 3:5, 3:5]})
    atlas = atlas_from_masks(masks, {"a": "lateral", "b": "medial"})
    in_a = np.asarray(nib.load(masks["a"]).dataobj) > 0
    in_b = np.asarray(nib.load(masks["b"]).dataobj) > 0
    rows = []
    for i in range(10):
        sub = f"{i + 1:02d}"
        order = ("SCS", "DUAL") if i % 2 else ("DUAL", "SCS")
        for period, condition in enumerate(order, 1):
            responder = i < 5 if condition == "SCS" else i % 2 == 0
            effect = rng.normal(0, 0.05, shape).astype(np.float32)
            effect[in_a] += 1.0 + rng.normal(0, 0.5) + (2.0 if responder and condition == "SCS" else 0.0)
            effect[in_b] += rng.normal(0, 0.5)
            eff = root / f"sub-{sub}_{condition}_effect.nii.gz"
            nib.save(nib.Nifti1Image(effect, AFFINE), eff)
            rows.append({"subject": sub, "contrast": condition.lower(), "effect": str(eff), "variance": None,
                         "condition": condition, "period": period, "sequence": "-".join(order),
                         "session": condition.lower(), "pain_relief": 70.0 if responder else 20.0,
                         "vas_pain": 5.0})
    maps = pd.DataFrame(rows)
    out = root / "out"
    outputs = run_pathway_analysis(maps, None, out, SPEC, conditions=("SCS", "DUAL"), atlas=atlas,
                                   responders=RULE)
    return {"maps": maps, "atlas": atlas, "out": out, "outputs": outputs}


def test_status_stats_and_prediction_are_written(dataset):
    outputs = dataset["outputs"]
    status = pd.read_csv(outputs["responders"], sep="\t", dtype={"subject": str})
    assert len(status) == 20 and status.groupby("condition")["responder"].sum().to_dict() == {"DUAL": 5, "SCS": 5}
    assert list(status.columns) == ["subject", "condition", "responder", "pain_relief"]
    stats = pd.read_csv(outputs["responder_stats"], sep="\t", na_values="n/a")
    node = stats[stats["level"] == "node"].set_index(["condition", "node"])
    effects = pd.read_csv(outputs["roi_effects"], sep="\t", dtype={"subject": str})
    scs_a = effects[(effects["condition"] == "SCS") & (effects["node"] == "a")].merge(status)
    expected = scs_a.groupby("responder")["effect"].mean()
    assert node.loc[("SCS", "a"), "difference"] == pytest.approx(expected[True] - expected[False])
    assert node.loc[("SCS", "a"), "p_fdr"] < 0.05
    assert node.loc[("SCS", "b"), "p_perm"] > 0.05 or node.loc[("SCS", "b"), "p_fdr"] >= 0.05
    assert (stats["p_perm"] >= 1 / 200).all() and (stats["p_fdr"] >= stats["p_perm"] - 1e-12).all()
    side = _strict(outputs["responder_stats"].with_suffix(".json").read_text())
    assert "Welch" in side["Description"] and side["Parameters"]["Definition"] == "pain_relief >= 50"
    prediction = pd.read_csv(outputs["responder_prediction"], sep="\t")
    assert set(prediction["features"]) == {"nodes", "pathways"} and (prediction["n_subjects"] == 10).all()
    assert (prediction["p_auc"] >= 1 / 200).all()
    _strict(outputs["responder_prediction"].with_suffix(".json").read_text())


def test_the_report_shows_the_responders(dataset):
    html = pathway_report_section(dataset["outputs"])
    assert "<h3>Responders</h3>" in html and "responders vs non-responders" in html
    assert "Predicting response" in html


def test_a_rule_on_an_absent_column_is_a_recorded_skip(dataset, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(dataset["out"], out)  # stale responder files from a previous run
    rule = RespondersSpec(rules=(ResponderRule("pain_relief", at_least=30),
                                 ResponderRule("vas_reduction_mm", at_least=20)))
    outputs = run_pathway_analysis(dataset["maps"], None, out, SPEC, conditions=("SCS", "DUAL"),
                                   atlas=dataset["atlas"], responders=rule)
    skipped = pd.read_csv(outputs["skipped"], sep="\t")
    reason = skipped.loc[skipped["part"] == "responders", "reason"].iloc[0]
    assert "vas_reduction_mm not in sessions.tsv" in reason
    root = out / "group" / "pathways"
    assert not (root / pathway_table_name("responders")).exists() and not (root / pathway_table_name("responder_stats")).exists()
    assert "responders" not in outputs


def test_turning_the_analysis_off_leaves_no_stale_tables(dataset, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(dataset["out"], out)
    outputs = run_pathway_analysis(dataset["maps"], None, out, SPEC, conditions=("SCS", "DUAL"),
                                   atlas=dataset["atlas"])
    assert not list((out / "group" / "pathways").glob("responder*"))
    assert "responders" not in outputs
