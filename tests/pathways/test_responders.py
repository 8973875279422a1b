"""Responder status from hand-made sessions tables; node tests against scipy, planted effects and the null."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.config.responders import ResponderRule
from fmri_pain.pathways.responders import (
    MissingColumnError,
    label_rearrangements,
    read_responders,
    responder_statistics,
    responder_status,
    responder_test,
)

NULL_INTERVAL_500 = stats.binom.interval(0.95, 500, 0.05)  # (16, 35)


def _sessions():
    return pd.DataFrame({
        "subject": ["01", "01", "02", "02", "03", "03", "04"],
        "condition": ["SCS", "DUAL", "SCS", "DUAL", "SCS", "DUAL", "SCS"],
        "pain_relief": [60, 20, 50, 49.9, np.nan, 80, 35],
        "vas_pain": [3.0, 7.0, 2.0, np.nan, 6.0, 1.0, np.nan],
    })


def test_status_of_one_rule_at_its_threshold():
    status = responder_status(_sessions(), [ResponderRule("pain_relief", at_least=50)])
    got = {(s, c): v for s, c, v in zip(status["subject"], status["condition"], status["responder"])}
    assert got[("01", "SCS")] == True and got[("02", "SCS")] == True  # noqa: E712 -- 50 passes ">= 50"
    assert got[("01", "DUAL")] == False and got[("02", "DUAL")] == False  # noqa: E712 -- 49.9 does not
    assert got[("03", "SCS")] is pd.NA  # a missing value has no status
    assert list(status.columns) == ["subject", "condition", "responder", "pain_relief"]


def test_all_and_any_combine_with_missing_values():
    rules = [ResponderRule("pain_relief", at_least=30), ResponderRule("vas_pain", at_most=3)]
    both = responder_status(_sessions(), rules, combine="all").set_index(["subject", "condition"])
    either = responder_status(_sessions(), rules, combine="any").set_index(["subject", "condition"])
    assert both.loc[("01", "SCS"), "responder"] == True  # noqa: E712
    assert not both.loc[("01", "DUAL"), "responder"]          # 20 % and VAS 7
    assert not both.loc[("03", "SCS"), "responder"]           # VAS 6 fails: the missing relief is moot
    assert both.loc[("04", "SCS"), "responder"] is pd.NA      # 35 % passes, VAS unknown
    assert either.loc[("04", "SCS"), "responder"]             # one passing rule decides
    assert either.loc[("03", "SCS"), "responder"] is pd.NA    # VAS fails, relief unknown
    assert not either.loc[("01", "DUAL"), "responder"]
    assert list(both.columns) == ["responder", "pain_relief", "vas_pain"]


def test_conditions_are_selected_case_insensitively():
    status = responder_status(_sessions(), [ResponderRule("pain_relief", at_least=50)], conditions=["dual"])
    assert set(status["condition"]) == {"DUAL"} and len(status) == 3


def test_a_rule_on_a_missing_column_is_an_error_that_says_why():
    with pytest.raises(MissingColumnError, match="vas_reduction_mm not in sessions.tsv.*baseline"):
        responder_status(_sessions(), [ResponderRule("vas_reduction_mm", at_least=20)])
    bad = _sessions().assign(pain_relief="a lot")
    with pytest.raises(ValueError, match="not numeric"):
        responder_status(bad, [ResponderRule("pain_relief", at_least=50)])


def test_responders_tsv_reads_back(tmp_path):
    from fmri_pain.bids.derivatives import write_tsv

    status = responder_status(_sessions(), [ResponderRule("pain_relief", at_least=50)])
    back = read_responders(write_tsv(status, tmp_path / "responders.tsv"))
    pd.testing.assert_series_equal(back["responder"], status["responder"])


def test_welch_and_exact_permutation_p_match_scipy():
    rng = np.random.default_rng(3)
    y = rng.normal(size=7)
    r = np.array([1, 0, 1, 0, 0, 1, 0], dtype=bool)
    row = responder_test(y, r, n_permutations=1000)
    welch = stats.ttest_ind(y[r], y[~r], equal_var=False)
    assert row["t"] == pytest.approx(welch.statistic) and row["df"] == pytest.approx(welch.df)
    assert row["p_welch"] == pytest.approx(welch.pvalue)
    assert row["difference"] == pytest.approx(y[r].mean() - y[~r].mean())
    exact = stats.permutation_test(
        (y[r], y[~r]), lambda a, b, axis: np.abs(stats.ttest_ind(a, b, equal_var=False, axis=axis).statistic),
        permutation_type="independent", alternative="greater", n_resamples=np.inf)
    assert row["exhaustive"] and row["n_rearrangements"] == 35
    assert row["p_perm"] == pytest.approx(exact.pvalue)
    assert row["p_perm"] >= 1 / 35


def test_random_relabellings_keep_the_observed_first_and_the_p_floor():
    labels, exhaustive = label_rearrangements(20, 8, 99, np.random.default_rng(0))
    assert not exhaustive and labels.shape == (100, 20)
    assert (labels.sum(axis=1) == 8).all() and labels[0, :8].all() and not labels[0, 8:].any()
    y = np.r_[np.full(8, 10.0), np.zeros(12)] + np.random.default_rng(1).normal(0, 0.01, 20)
    row = responder_test(y, np.arange(20) < 8, n_permutations=99, rng=0)
    assert row["p_perm"] == pytest.approx(1 / 100)  # nothing beats a perfect split: p = 1 / (1 + n)


def _roi_tables(rng, n=20, k=10, delta=0.0, node="S1", condition="SCS"):
    """Long ROI effects (8 nodes in 3 pathways) and a status table; ``delta`` added to ``node`` in responders."""
    nodes = {"VPL": "lateral", "S1": "lateral", "S2": "lateral", "pIns": "lateral", "MDthal": "medial",
             "ACC": "medial", "aIns": "medial", "PAG": "descending"}
    responder = rng.permutation(np.arange(n) < k)
    subjects = [f"{i:02d}" for i in range(n)]
    rows = []
    shared = rng.normal(0, 1.0, n)  # a subject effect shared by the nodes
    for name, pathway in nodes.items():
        effect = 0.5 * shared + rng.normal(0, 1.0, n) + delta * (name == node) * responder
        rows += [{"subject": s, "condition": condition, "node": name, "pathway": pathway, "effect": e}
                 for s, e in zip(subjects, effect)]
    status = pd.DataFrame({"subject": subjects, "condition": condition,
                           "responder": pd.array(responder, dtype="boolean")})
    return pd.DataFrame(rows), status


def test_a_planted_responder_difference_is_found_in_its_node_only():
    rng = np.random.default_rng(11)
    hits = {"S1": 0, "ACC": 0}
    n_sets = 30
    for i in range(n_sets):
        effects, status = _roi_tables(rng, delta=2.5)  # 2.2 SD of the node's noise (SD 1.12), n = 20 (10 + 10)
        table, notes = responder_statistics(effects, status, n_permutations=999, random_state=i)
        assert not notes
        nodes = table[table["level"] == "node"].set_index("node")
        assert (nodes["p_perm"] >= 1 / 1000).all()
        for name in hits:
            hits[name] += bool(nodes.loc[name, "p_fdr"] < 0.05)
        assert nodes.loc["S1", "difference"] == pytest.approx(
            effects.query("node == 'S1'").merge(status).groupby("responder")["effect"].mean().diff().iloc[-1])
    assert hits["S1"] >= 0.8 * n_sets, hits
    assert hits["ACC"] <= 0.15 * n_sets, hits


def test_the_node_test_is_calibrated_under_the_null():
    rng = np.random.default_rng(2026)
    rejections = {"p_perm": 0, "p_welch": 0}
    for i in range(500):  # n = 20, 8 responders at random, no difference
        y = rng.normal(size=20) + rng.standard_t(5, size=20)
        r = rng.permutation(np.arange(20) < 8)
        row = responder_test(y, r, n_permutations=199, rng=rng)
        rejections["p_perm"] += row["p_perm"] <= 0.05
        rejections["p_welch"] += row["p_welch"] <= 0.05
    lo, hi = NULL_INTERVAL_500
    for key, count in rejections.items():
        assert lo <= count <= hi, (key, count)


def test_the_welch_test_is_calibrated_at_n_8():
    rng = np.random.default_rng(8)
    count = 0
    for _ in range(500):
        y = rng.normal(size=8)
        count += responder_test(y, rng.permutation(np.arange(8) < 3), n_permutations=0)["p_welch"] <= 0.05
    lo, hi = NULL_INTERVAL_500
    assert lo <= count <= hi, count


def test_conditions_with_a_small_group_are_noted_not_tested():
    effects, status = _roi_tables(np.random.default_rng(0), n=6, k=1)
    table, notes = responder_statistics(effects, status, n_permutations=10)
    assert table.empty and "1 responder(s) and 5 non-responder(s)" in notes[0]
