"""Pain-pathway analysis on the simulator's ground truth.

One simulated trial (6 subjects, 4 mm, 100 volumes, PPI coupling on, effects x2)
is generated per module, taken through a plain nilearn first level, then through
:func:`run_pathway_analysis` with the simulator's truth ROIs as the atlas and,
for the ROI effects, with the pain-pathway atlas.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from fmri_pain.pathways.atlas import atlas_from_masks
from fmri_pain.pathways.roi import extract_roi_effects
from fmri_pain.pathways.run import AtlasCache, run_pathway_analysis
from fmri_pain.report.pathways import pathway_report_section
from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.pathways.stats import roi_statistics
from fmri_pain.simulate.dataset import simulate_trial
from tests.support.pathways_fixtures import first_level_maps

SCALE = 2.0


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    root = tmp_path_factory.mktemp("pathways_sim")
    sim = simulate_trial(root, n_subjects=6, seed=3, voxel_size=4.0, n_volumes=100, ppi=True,
                         raw=False, effect_scale=SCALE)
    maps, runs = first_level_maps(root, sim.truth, root / "firstlevel")
    rois = {r["name"]: sim.truth_dir / r["mask"] for r in sim.truth["rois"]}
    pathways = {r["name"]: (r["pathway"] if r["pathway"] in ("lateral", "medial") else "control")
                for r in sim.truth["rois"]}
    atlas = atlas_from_masks(rois, pathways)
    spec = PathwaysSpec(n_permutations=20)
    out = root / "out"
    outputs = run_pathway_analysis(maps, runs, out, spec, atlas=atlas)
    return {"sim": sim, "maps": maps, "runs": runs, "atlas": atlas, "outputs": outputs, "spec": spec,
            "root": root}


def _read(path):
    return pd.read_csv(path, sep="\t", na_values="n/a")


def _true_means(truth: dict) -> pd.DataFrame:
    """Mean simulated amplitude per ROI and condition over the subjects' sessions."""
    rows = []
    for info in truth["subjects"].values():
        for sess in info["sessions"].values():
            for roi, amp in sess["amplitudes"].items():
                rows.append({"node": roi, "condition": sess["condition"], "amplitude": amp})
    return pd.DataFrame(rows).groupby(["node", "condition"])["amplitude"].mean().unstack()


def test_outputs_written(trial):
    outputs = trial["outputs"]
    for key in ("roi_effects", "roi_stats", "connectivity_ppi", "connectivity_ppi_stats",
                "connectivity_correlation", "connectivity_correlation_stats", "behaviour", "decoding",
                "forest_dualMinusScs", "connectome_DUAL", "behaviour_pain_relief"):
        assert outputs[key].is_file(), key
    effects = _read(outputs["roi_effects"])
    assert {"subject", "session", "condition", "period", "sequence", "node", "pathway", "effect",
            "variance", "pain_relief", "vas_pain", "stim_amplitude_ma"} <= set(effects.columns)
    assert len(effects) == 18 * 11
    html = pathway_report_section(outputs)
    assert html.count("data:image/png;base64,") >= 5 and "dualMinusScs" in html


def test_condition_means_track_truth(trial):
    stats = _read(trial["outputs"]["roi_stats"])
    node = stats[stats["level"] == "node"]
    est = node.pivot_table(index="node", columns="contrast", values="estimate")[["scs", "drgs", "dual"]]
    est.columns = ["SCS", "DRGS", "DUAL"]
    truth = _true_means(trial["sim"].truth).loc[est.index, ["SCS", "DRGS", "DUAL"]]
    r = np.corrcoef(est.to_numpy().ravel(), truth.to_numpy().ravel())[0, 1]
    assert r > 0.85, (r, est, truth)
    # every simulated difference of >= 1 % (x scale) is recovered with the right sign
    for roi in est.index:
        for a in ("SCS", "DRGS", "DUAL"):
            for b in ("SCS", "DRGS", "DUAL"):
                if truth.loc[roi, a] - truth.loc[roi, b] >= 1.0:
                    assert est.loc[roi, a] > est.loc[roi, b], (roi, a, b)
    control = node[(node["node"] == "control") & node["contrast"].isin(["scs", "drgs", "dual"])]
    assert (control["p"] > 0.05).all() and (control["estimate"].abs() < 0.5).all()


def test_period_effect_sign_and_fdr_contrasts(trial):
    stats = _read(trial["outputs"]["roi_stats"])
    assert trial["sim"].truth["period_effect"]["percent_per_period"] < 0
    lateral = stats[(stats["level"] == "pathway") & (stats["node"] == "lateral")].set_index("contrast")
    assert lateral.loc["period3MinusPeriod1", "estimate"] < 0
    assert lateral.loc["period3MinusPeriod1", "p"] < 0.05
    dual_scs = stats[(stats["level"] == "node") & (stats["contrast"] == "dualMinusScs")].set_index("node")
    for roi in ("pINS_L", "pINS_R", "dACC"):
        assert dual_scs.loc[roi, "estimate"] > 0 and dual_scs.loc[roi, "p_fdr"] < 0.05, roi
    assert dual_scs.loc["control", "p_fdr"] > 0.05


def test_mixed_model_agrees_with_statsmodels(trial):
    smf = pytest.importorskip("statsmodels.formula.api")
    effects = _read(trial["outputs"]["roi_effects"])
    stats = _read(trial["outputs"]["roi_stats"])
    for roi in ("pINS_R", "S2_L"):
        data = effects[effects["node"] == roi].copy()
        data["subject"] = data["subject"].astype(str)
        fit = smf.mixedlm("effect ~ C(condition, Treatment('SCS')) + C(period)", data,
                          groups=data["subject"]).fit(reml=True)
        mine = stats[(stats["level"] == "node") & (stats["node"] == roi)].set_index("contrast")
        for contrast, term in (("dualMinusScs", "C(condition, Treatment('SCS'))[T.DUAL]"),
                               ("drgsMinusScs", "C(condition, Treatment('SCS'))[T.DRGS]"),
                               ("period2MinusPeriod1", "C(period)[T.2]")):
            assert mine.loc[contrast, "estimate"] == pytest.approx(fit.params[term], rel=1e-4, abs=1e-6)
            assert mine.loc[contrast, "se"] == pytest.approx(fit.bse[term], rel=1e-3)
            # 6 complete subjects: the within-subject ANOVA df (6 - 1)(3 - 1) - 2 = 8, not inf
            assert mine.loc[contrast, "df"] == pytest.approx(8, rel=1e-4)
            assert mine.loc[contrast, "p"] == pytest.approx(
                2 * scipy_stats.t.sf(abs(fit.tvalues[term]), 8), rel=1e-2, abs=1e-8)


def test_ppi_coupling_recovered(trial):
    truth = trial["sim"].truth["ppi"]
    stats = _read(trial["outputs"]["connectivity_ppi_stats"])
    ppi = _read(trial["outputs"]["connectivity_ppi"])
    pair = ppi[(ppi["seed"] == truth["seed"]) & (ppi["target"] == truth["target"])]
    assert pair["beta"].mean() > 0
    coupled = stats[(stats["seed"] == truth["seed"]) & (stats["target"] == truth["target"])].set_index("contrast")
    assert coupled.loc["dual", "estimate"] > 0 and coupled.loc["dual", "p"] < 0.05
    # uncoupled pairs (the truth has no coupling between other nodes) stay null after FDR
    others = stats[~((stats["seed"] == truth["seed"]) & (stats["target"] == truth["target"]))
                   & (stats["target"] != truth["target"]) & stats["contrast"].isin(["scs", "drgs", "dual"])]
    assert (others["p_fdr"] < 0.05).mean() < 0.05


def test_decoding_signal_and_null(trial, tmp_path):
    from fmri_pain.pathways.decoding import run_decoding

    table = run_decoding(trial["maps"], lambda side: trial["atlas"], tmp_path, n_permutations=20,
                         tasks=["dualVsDrgs"], whole_brain=False,
                         node_groups={"insulaAcc": ["pINS_L", "pINS_R", "dACC"]})
    table = table.set_index("region")
    assert table.loc["insulaAcc", "accuracy"] >= 0.75 and table.loc["insulaAcc", "p_perm"] < 0.1
    assert table.loc["control", "p_perm"] > 0.1
    assert (tmp_path / "desc-decodingDualVsDrgsInsulaAcc_weights.nii.gz").is_file()
    full = _read(trial["outputs"]["decoding"])
    assert set(full["task"]) == {"all", "drgsVsScs", "dualVsScs", "dualVsDrgs"}
    assert ((full["accuracy"] >= 0) & (full["accuracy"] <= 1)).all()


def test_pathway_atlas_nodes_on_simulated_maps(trial):
    """The shipped pain-pathway atlas (per pain side) recovers the simulated orderings."""
    spec = trial["spec"]
    cache = AtlasCache(spec, target_img=trial["maps"]["effect"].iloc[0])
    effects = extract_roi_effects(trial["maps"], cache)
    assert set(cache.built) == {"left", "right"}
    stats = roi_statistics(effects).query("level == 'node'").set_index(["node", "contrast"])["estimate"]
    assert stats[("S1_leg", "drgsMinusScs")] > 0      # S1 leg: DRGS 1.6 > SCS 0.8
    assert stats[("pIns_contra", "dualMinusScs")] > 0  # posterior insula: DUAL 2.0 > SCS 1.0
    assert stats[("pIns_ipsi", "dualMinusScs")] > 0
    assert stats[("S2_ipsi", "dualMinusDrgs")] > 0     # S2: DUAL 2.0 > DRGS 0.8
    assert abs(stats[("V1_control", "dual")]) < 0.3
