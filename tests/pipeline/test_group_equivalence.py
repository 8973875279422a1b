"""The group level with margin tests: voxelwise maps from the paired route and the report section."""

from __future__ import annotations

import json

import pytest

from fmri_pain.config.spec import spec_from_dict
from tests.glm.second_level.test_group_honesty import make_trial


@pytest.fixture
def quick_figures(monkeypatch):
    import fmri_pain.report.equivalence
    import fmri_pain.report.group

    for module in (fmri_pain.report.group, fmri_pain.report.equivalence):
        monkeypatch.setattr(module, "glass_brain_uri", lambda *a, **k: "data:,")
    monkeypatch.setattr(fmri_pain.report.group, "design_matrix_uri", lambda *a, **k: "data:,")


def test_group_level_writes_tost_maps_and_reports_them(tmp_path, quick_figures):
    from fmri_pain.pipeline.group import run_group_level

    spec = spec_from_dict({"inference": {"enabled": False, "n_perm": 100}, "pathways": {"enabled": False},
                           "equivalence": {"tests": [
                               {"contrast": "drgsMinusScs", "kind": "equivalence", "margin": 2.0},
                               {"contrast": "dualMinusScs", "kind": "superiority", "margin": 0.0}]}})
    runs = make_trial(tmp_path, 6, spec)
    result = run_group_level(tmp_path, runs, spec)
    tost, sup = result.equivalence_maps
    assert tost.route == "paired" and sup.route == "paired"
    path = tost.paths["logp_fwe"]
    assert path.parent == tmp_path / "group"
    assert path.name == "task-stim_space-MNI152NLin2009cAsym_contrast-drgsMinusScs_desc-tost_stat-logp_statmap.nii.gz"
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    # 6 subjects: 2^6 sign flips, all used; the paired design adjusts for the period difference
    assert sidecar["NumberOfDistinctRearrangements"] == 64 and sidecar["Exhaustive"] is True
    assert sidecar["DesignColumns"] == ["intercept", "period_difference"]
    assert sidecar["Margin"] == 2.0 and sidecar["Parameters"]["equivalence"]["kind"] == "equivalence"
    assert (tost.result.p_fwe >= 1 / 64).all() and (tost.result.p_fwe >= tost.result.p_uncorrected).all()
    # the true DUAL - SCS is 1.5 with noise SD ~1.4 per voxel: superiority over 0 in most voxels uncorrected
    assert (sup.result.p_uncorrected < 0.05).mean() > 0.5
    html = result.report.read_text()
    assert "Non-inferiority, superiority and equivalence" in html and html.count(">paired<") >= 2
    md = (tmp_path / "CITATION.md").read_text()
    assert ("**Margin tests.** Voxelwise (equivalence of drgsMinusScs, superiority of dualMinusScs), "
            "each one-sided test was a sign-flip permutation test (64 rearrangements") in md
    assert "schuirmann1987" not in md  # no node table (pathways disabled): TOST cited with it only
