"""The pathway run writes effect_sizes.tsv (columns, sidecar, values) and the dz forest plots.

A hand-made crossover: 8 subjects on the Williams sequences (one drop-out), two nodes whose
maps hold a known condition effect plus subject, period and voxel noise.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.pathways.atlas import atlas_from_masks
from fmri_pain.pathways.effect_sizes import TABLE_COLUMNS
from fmri_pain.pathways.run import run_pathway_analysis
from fmri_pain.report.methods import cited_keys, pathways_section
from fmri_pain.report.pathways import pathway_report_section
from tests.support.pathways_fixtures import cube_masks, williams_design

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SHAPE = (6, 6, 6)
EFFECT = {"SCS": 1.0, "DRGS": 1.2, "DUAL": 2.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("effect_sizes")
    rng = np.random.default_rng(8)
    masks = cube_masks(root, SHAPE, AFFINE, {"a": np.s_[1:3, 1:3, 1:3], "b": np.s_[3:5, 3:5, 3:5]})
    atlas = atlas_from_masks(masks, {"a": "lateral", "b": "medial"})
    design = williams_design(8, n_periods_kept=2)
    subject_effect = {s: rng.normal(0, 1) for s in design["subject"].unique()}
    rows = []
    for r in design.itertuples():
        effect = np.full(SHAPE, EFFECT[r.condition] + subject_effect[r.subject] + 0.3 * r.period,
                         np.float32) + rng.normal(0, 0.5, SHAPE).astype(np.float32)
        eff = root / f"sub-{r.subject}_ses-{r.session}_effect.nii.gz"
        var = root / f"sub-{r.subject}_ses-{r.session}_variance.nii.gz"
        nib.save(nib.Nifti1Image(effect, AFFINE), eff)
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), var)
        rows.append({"subject": r.subject, "session": r.session, "condition": r.condition,
                     "period": r.period, "sequence": r.sequence, "effect": str(eff),
                     "variance": str(var)})
    spec = PathwaysSpec(n_bootstrap=300, decoding=False, behaviour_covariates=(), random_state=3)
    outputs = run_pathway_analysis(pd.DataFrame(rows), None, root / "out", spec, atlas=atlas)
    return {"outputs": outputs, "spec": spec, "design": design}


def test_effect_sizes_table_and_sidecar(run):
    outputs = run["outputs"]
    table = pd.read_csv(outputs["effect_sizes"], sep="\t", na_values="n/a", keep_default_na=False)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert set(table["level"]) == {"node", "pathway", "index"}
    assert {"scs", "drgs", "dual", "dualMinusScs", "dualMinusMean"} <= set(table["contrast"])
    sidecar = json.loads(outputs["effect_sizes"].with_suffix(".json").read_text())
    assert sidecar["NumberOfBootstrapResamples"] == 300 and sidecar["RandomSeed"] == 3
    assert sidecar["ConfidenceLevel"] == pytest.approx(0.95)
    assert "BCa" in sidecar["IntervalMethod"] and sidecar["psc"]["Units"] == "percent signal change"
    # the drop-out (last subject, two periods) is left out of contrasts that need its missing condition
    dropped = run["design"]["subject"].iloc[-1]
    assert any(f"sub-{dropped}" in note for note in sidecar["Notes"])
    node = table[(table["level"] == "node") & (table["node"] == "a")].set_index("contrast")
    missing = ({"SCS", "DRGS", "DUAL"} - set(run["design"].query("subject == @dropped")["condition"])).pop()
    assert node.loc[missing.lower(), "n_subjects"] == 7 and node.loc[missing.lower(), "df"] == 6
    assert all(node.loc[c, "n_subjects"] == 8 for c in ("scs", "drgs", "dual") if c != missing.lower())


def test_node_differences_equal_an_independent_computation(run):
    """Period effects of the subject + condition + period OLS; d = adjusted difference per subject."""
    effects = pd.read_csv(run["outputs"]["roi_effects"], sep="\t", na_values="n/a",
                          dtype={"subject": str})
    table = pd.read_csv(run["outputs"]["effect_sizes"], sep="\t", na_values="n/a")
    node = effects[effects["node"] == "a"]
    ols = smf.ols("effect ~ 0 + C(condition) + C(subject) + C(period)", node).fit()
    period = {1: 0.0, 2: ols.params["C(period)[T.2]"], 3: ols.params["C(period)[T.3]"]}
    wide = node.assign(u=node["effect"] - node["period"].map(period)).pivot(
        index="subject", columns="condition", values="u")
    for name, (a, b) in {"dualMinusScs": ("DUAL", "SCS"), "drgsMinusScs": ("DRGS", "SCS"),
                         "dualMinusDrgs": ("DUAL", "DRGS")}.items():
        d = (wide[a] - wide[b]).dropna().to_numpy()
        row = table[(table["level"] == "node") & (table["node"] == "a")
                    & (table["contrast"] == name)].iloc[0]
        assert row["n_subjects"] == len(d)
        assert row["psc"] == pytest.approx(d.mean(), rel=1e-6)
        assert row["dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-6)
        assert row["hedges_g"] == pytest.approx(row["dz"] * (1 - 3 / (4 * (len(d) - 1) - 1)), rel=1e-9)
        assert row["psc_ci_low"] < row["psc"] < row["psc_ci_high"]
        assert row["dz_ci_low"] < row["dz"] < row["dz_ci_high"]


def test_forest_plots_written_and_in_the_report(run):
    outputs = run["outputs"]
    forests = {k: p for k, p in outputs.items() if k.startswith("effect_forest_")}
    assert "effect_forest_dualMinusScs" in forests
    for key, path in forests.items():
        assert path.name == f"contrast-{key.removeprefix('effect_forest_')}_stat-dz_forest.png"
        assert path.stat().st_size > 1000
    html = pathway_report_section(outputs)
    assert "Effect sizes" in html and "forest plot of dz, contrast dualMinusScs" in html
    methods = pathways_section(outputs)
    assert "BCa" in methods.text and "300 resamples, seed 3" in methods.text
    assert {"efron1993", "hesterberg2015", "hedges1981"} <= set(cited_keys([methods]))


def test_forests_of_a_rerun_are_left_alone_and_stale_ones_removed(tmp_path):
    from fmri_pain.pathways.effect_size_outputs import write_effect_sizes

    rng = np.random.default_rng(0)
    design = williams_design(6)
    effects = design.assign(effect=rng.normal(1, 1, len(design)), node="S1", pathway="lateral")
    stale = tmp_path / "contrast-gone_stat-dz_forest.png"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    kwargs = {"conditions": ("SCS", "DRGS", "DUAL"), "spec": PathwaysSpec(n_bootstrap=200), "params": {}}
    first = write_effect_sizes(effects, tmp_path, **kwargs)
    forests = {k: p for k, p in first.items() if k.startswith("effect_forest_")}
    assert forests and not stale.exists()
    mtimes = {p: p.stat().st_mtime_ns for p in first.values()}
    again = write_effect_sizes(effects, tmp_path, **kwargs)
    assert again == first and {p: p.stat().st_mtime_ns for p in again.values()} == mtimes
