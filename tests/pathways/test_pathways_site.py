"""Multi-centre trials in the ROI models: site indicators as between-subject fixed effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.pathways.run import run_pathway_analysis
from fmri_pain.pathways.stats import crossover_design, roi_statistics
from tests.pathways.test_pathways_one_condition import _strict, dataset  # noqa: F401 (fixture)
from tests.pathways.test_pathways_stats import crossover_table

SITE_OFFSET = {"A": 0.0, "B": 3.0}


def _two_site_table(seed=0):
    data = crossover_table({"a": {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}}, seed=seed)
    data["site"] = np.where(data["subject"].astype(int) % 2 == 0, "A", "B")
    data["effect"] += data["site"].map(SITE_OFFSET)
    return data


def test_crossover_roi_model_with_site_matches_statsmodels():
    smf = pytest.importorskip("statsmodels.formula.api")
    data = _two_site_table()
    table = roi_statistics(data, site_column="site")
    node = table[table["level"] == "node"].set_index("contrast")
    exog, _, _ = crossover_design(data, ("SCS", "DRGS", "DUAL"),
                                  sites=dict(zip(data["subject"], data["site"])))
    assert "site-B" in exog.columns and exog["site-B"].mean() == pytest.approx(0.0)
    ref_data = data.assign(site_b=(data["site"] == "B") - (data["site"] == "B").mean())
    ref = smf.mixedlm("effect ~ 0 + C(condition) + C(period, Sum) + site_b", ref_data,
                      groups=ref_data["subject"]).fit(reml=True)
    for cond in ("SCS", "DUAL"):
        # the condition mean at the average site: the site offset (0 / 3) leaves it at +1.5
        assert node.loc[cond.lower(), "estimate"] == pytest.approx(
            ref.params[f"C(condition)[{cond}]"], rel=1e-5)
        assert node.loc[cond.lower(), "se"] == pytest.approx(ref.bse[f"C(condition)[{cond}]"],
                                                             rel=1e-3)
    # complete crossover: within-subject differences do not change with a between-subject term
    plain = roi_statistics(data).query("level == 'node'").set_index("contrast")
    for name in ("dualMinusScs", "drgsMinusScs"):
        assert node.loc[name, "estimate"] == pytest.approx(plain.loc[name, "estimate"], rel=1e-6)
    # the condition means' uncertainty shrinks once the site variance is modelled
    assert node.loc["scs", "se"] < plain.loc["scs", "se"]


def test_one_condition_roi_model_with_site_is_the_within_site_t_test():
    rng = np.random.default_rng(4)
    sites = np.repeat(["A", "B"], [5, 7])
    values = 0.5 + rng.normal(size=12) + pd.Series(sites).map(SITE_OFFSET).to_numpy()
    data = pd.DataFrame({"subject": [f"{i:02d}" for i in range(12)], "session": None,
                         "condition": "stim", "period": np.nan, "sequence": None, "node": "a",
                         "pathway": "lateral", "effect": values, "site": sites})
    row = roi_statistics(data, conditions=("stim",), site_column="site").query(
        "level == 'node'").iloc[0]
    within = sum(((g - g.mean()) ** 2).sum() for _, g in pd.Series(values).groupby(sites)) / 10
    assert row["model"] == "ols" and row["df"] == 10
    assert row["estimate"] == pytest.approx(values.mean())
    assert row["se"] == pytest.approx(np.sqrt(within / 12))
    assert row["p"] == pytest.approx(2 * stats.t.sf(abs(values.mean() / np.sqrt(within / 12)), 10))


def test_roi_model_without_a_site_for_every_subject_leaves_site_out_and_says_so(caplog):
    data = _two_site_table()
    data.loc[data["subject"] == "03", "site"] = None
    table = roi_statistics(data, site_column="site")
    plain = roi_statistics(data)
    pd.testing.assert_frame_equal(table, plain)
    assert "site (site) not modelled: no value for sub-03" in caplog.text
    data.loc[data["subject"] == "03", "site"] = ["A", "B", "A"]
    with pytest.raises(ValueError, match="differs between rows of 03"):
        roi_statistics(data, site_column="site")


def test_pathway_stage_records_the_site_in_roi_stats(dataset, tmp_path):
    """The stage passes ``group.site_column`` to the ROI models and says so in roi_stats.json."""
    maps = dataset["maps"].assign(site=["A", "A", "B", "B", "B"])
    outputs = run_pathway_analysis(maps, None, tmp_path, PathwaysSpec(n_permutations=0),
                                   atlas=dataset["atlas"], site_column="site")
    side = _strict(outputs["roi_stats"].with_suffix(".json").read_text())
    assert side["Sites"]["Column"] == "site" and side["Sites"]["Subjects"] == {"A": 2, "B": 3}
    assert side["Description"].endswith("site entered every model as mean-centred indicator "
                                         "columns (between-subject fixed effects)")
    table = pd.read_csv(outputs["roi_stats"], sep="\t", na_values="n/a")
    effects = pd.read_csv(outputs["roi_effects"], sep="\t", na_values="n/a")
    node = table[table["level"] == "node"].set_index("node")
    values = effects[effects["node"] == "a"].sort_values("subject")["effect"].to_numpy()
    sites = np.array(["A", "A", "B", "B", "B"])
    within = sum(((values[sites == s] - values[sites == s].mean()) ** 2).sum() for s in "AB") / 3
    assert node.loc["a", "df"] == 3 and node.loc["a", "estimate"] == pytest.approx(values.mean())
    assert node.loc["a", "se"] == pytest.approx(np.sqrt(within / 5), rel=1e-6)
    # without the column in the maps table, nothing is claimed
    plain = run_pathway_analysis(dataset["maps"], None, tmp_path / "plain",
                                 PathwaysSpec(n_permutations=0), atlas=dataset["atlas"],
                                 site_column="site")
    assert "Sites" not in _strict(plain["roi_stats"].with_suffix(".json").read_text())


def test_carryover_model_with_site_keeps_the_within_subject_rows():
    # site is between-subject: the subjects-fixed model of carry-over absorbs it, so every
    # within-subject row (differences, period, carry-over) equals the single-site fit
    data = crossover_table({"a": {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}}, seed=3)
    sites = np.where(data["subject"].astype(int) % 2 == 0, "A", "B")
    with_site = roi_statistics(data.assign(site=sites), carryover=True, site_column="site")
    without = roi_statistics(data, carryover=True)
    within = with_site["model"] == "ols-subject-fixed"
    assert set(with_site.loc[within, "contrast"]) >= {"carryoverF", "carryoverDual", "dualMinusScs"}
    pd.testing.assert_frame_equal(
        with_site[within].set_index(["level", "node", "contrast"])[["estimate", "stat", "df", "p"]],
        without[within].set_index(["level", "node", "contrast"])[["estimate", "stat", "df", "p"]])
