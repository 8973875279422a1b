"""Pain-pathway ROI effects on real pain maps (NeuroVault 1425, 21 studies, one condition)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import nibabel as nib
import pandas as pd
import pytest
from scipy import stats as sps

from fmri_pain.pathways.atlas import build_atlas
from fmri_pain.pathways.roi import extract_roi_effects
from fmri_pain.pathways.stats import roi_statistics

PAIN21 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pain21"

pytestmark = pytest.mark.skipif(not PAIN21.is_dir(), reason="../shared/data/pain21 not available")


@pytest.fixture(scope="module")
def pain21():
    maps = pd.DataFrame([{"subject": f"{i:02d}", "session": None, "condition": "PAIN", "period": None,
                          "sequence": None, "effect": str(PAIN21 / f"contrast_pain_{i:02d}.nii.gz"),
                          "variance": str(PAIN21 / f"var_pain_{i:02d}.nii.gz")} for i in range(1, 22)])
    ref = nib.load(PAIN21 / "contrast_pain_01.nii.gz")
    # build at 4 mm (fast), used on the 2 mm maps through nearest-neighbour resampling
    grid = nib.Nifti1Image(np.zeros((46, 55, 46), np.int8), ref.affine @ np.diag([2, 2, 2, 1]))
    atlas = build_atlas(grid, "right")
    effects = extract_roi_effects(maps, lambda side: atlas)
    return effects, roi_statistics(effects, conditions=("PAIN",))


def test_pain_nodes_positive_control_not(pain21):
    _, stats = pain21
    node = stats[(stats["level"] == "node") & (stats["contrast"] == "pain")].set_index("node")
    assert (node["model"] == "ols").all()  # one map per "subject": OLS one-sample test
    assert (node["n_subjects"] >= 20).all()  # the brain-stem RVM lies outside one study's mask
    for name in ("pIns_contra", "pIns_ipsi", "aIns_contra", "aIns_ipsi", "S2_contra", "S2_ipsi",
                 "MCC", "thal_VPL_VPM", "thal_medial"):
        assert node.loc[name, "estimate"] > 0 and node.loc[name, "p_fdr"] < 0.01, name
    assert node.loc["V1_control", "p"] > 0.05
    assert stats.query("level == 'pathway' and node == 'lateral'")["p"].iloc[0] < 0.01


def test_one_sample_equals_scipy_ttest(pain21):
    effects, stats = pain21
    for name in ("pIns_ipsi", "V1_control"):
        values = effects.loc[effects["node"] == name, "effect"].to_numpy()
        ref = sps.ttest_1samp(values, 0.0)
        row = stats[(stats["level"] == "node") & (stats["node"] == name)].iloc[0]
        assert row["estimate"] == pytest.approx(values.mean())
        assert row["stat"] == pytest.approx(ref.statistic)
        assert row["p"] == pytest.approx(ref.pvalue)
