"""Responder maps on small images: nilearn's two-group t, a planted difference found, files and skips."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.glm.inference.responder_maps import contrast_label, responder_map_inference, run_responder_maps
from fmri_pain.glm.second_level.outputs import GroupResult

SHAPE = (8, 8, 6)
SPACE = "MNI152NLin2009aAsym"


def _maps(rng, responder, delta=3.0):
    """Noise maps; responders get ``delta`` in a 3x3x3 block at (1:4, 1:4, 1:4)."""
    out = []
    for r in responder:
        vol = rng.normal(0, 1, SHAPE)
        if r:
            vol[1:4, 1:4, 1:4] += delta
        out.append(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)))
    return out


def test_two_group_t_matches_scipy_and_a_planted_difference_is_found():
    rng = np.random.default_rng(4)
    responder = rng.permutation(np.arange(14) < 6)
    images = _maps(rng, responder, delta=5.0)
    mask = nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4))
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(14)], "responder": responder})
    design, maps, result = responder_map_inference(images, rows, mask, n_perm=199, seed=1)
    data = np.stack([np.asarray(i.dataobj) for i in images])
    expected = stats.ttest_ind(data[responder], data[~responder], axis=0)  # pooled variance, df = n - 2
    np.testing.assert_allclose(np.asarray(maps["t"].dataobj), expected.statistic, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(maps["effect"].dataobj),
                               data[responder].mean(0) - data[~responder].mean(0), atol=1e-4)
    assert result.scheme == "permute" and result.two_sided
    p_fwe = result.p_fwe.reshape(SHAPE)
    planted = np.zeros(SHAPE, bool)
    planted[1:4, 1:4, 1:4] = True
    assert (p_fwe[planted] < 0.05).mean() > 0.8
    assert (p_fwe[~planted] < 0.05).mean() < 0.01
    assert p_fwe.min() >= 1 / 200 and (result.p_fwe >= result.p_uncorrected - 1e-12).all()


def test_run_writes_named_maps_and_records_a_skipped_condition(tmp_path):
    rng = np.random.default_rng(0)
    mask_path = tmp_path / f"task-stim_space-{SPACE}_desc-group_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4)), mask_path)
    rows, status = [], []
    for condition, responder in (("SCS", np.arange(8) < 4), ("DUAL", np.arange(8) < 1)):
        for i, (r, img) in enumerate(zip(responder, _maps(rng, responder))):
            path = tmp_path / f"sub-{i:02d}_{condition}.nii.gz"
            nib.save(img, path)
            rows.append({"subject": f"{i:02d}", "contrast": condition.lower(), "condition": condition,
                         "effect": path})
            status.append({"subject": f"{i:02d}", "condition": condition, "responder": bool(r)})
    group = GroupResult(tmp_path, "stim", [], [f"{i:02d}" for i in range(8)], [], mask_path, {},
                        pd.DataFrame(rows))
    out = run_responder_maps(group, pd.DataFrame(status), n_perm=100, seed=0)
    label = contrast_label("SCS")
    assert label == "scsRespondersMinusNonResponders"
    t_path = out.paths["SCS"]["t"]
    assert t_path.name == f"task-stim_space-{SPACE}_contrast-{label}_stat-t_statmap.nii.gz"
    side = json.loads(t_path.with_name(t_path.name.replace(".nii.gz", ".json")).read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert side["DegreesOfFreedom"] == 6 and side["DesignColumns"] == ["responders", "nonResponders"]
    assert len(side["Responders"]) == 4
    assert "logp_fwe" in out.paths["SCS"]
    summary = pd.read_csv(out.summary, sep="\t", na_values="n/a").set_index("condition")
    assert summary.loc["SCS", "status"] == "written"
    assert summary.loc["SCS", "n_rearrangements"] == 70 and summary.loc["SCS", "exhaustive"]  # C(8, 4)
    assert summary.loc["DUAL", "status"] == "skipped" and "1 responder(s)" in summary.loc["DUAL", "reason"]
    assert "DUAL" not in out.paths and any("DUAL" in s for s in out.skipped)
