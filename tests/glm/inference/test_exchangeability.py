"""Blocks and variance groups of each group contrast, from its design and the site."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmri_pain.config.fields import SpecError
from fmri_pain.glm.inference.exchangeability import exchangeability
from fmri_pain.glm.inference.rearrangements import count_rearrangements
from fmri_pain.glm.second_level.models import one_sample_design, repeated_measures_design
from fmri_pain.glm.second_level.site import add_site
from fmri_pain.trial import CONDITIONS, trial_contrasts


def _one_sample(sites, covariate=None):
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(len(sites))], "site": sites})
    covs = ()
    if covariate is not None:
        rows["age"] = covariate
        covs = ("age",)
    return add_site(one_sample_design(rows, covs), "site")


def test_sign_flips_need_no_blocks_and_slopes_permute_within_site():
    sites = list("AAAABBBB")
    design = _one_sample(sites, covariate=[3, 1, 4, 2, 5, 9, 7, 6])
    flips = exchangeability(design, "intercept")
    assert flips.blocks is None and flips.record["ExchangeabilityBlocks"]["Unit"] is None
    np.testing.assert_array_equal(flips.variance_groups, sites)
    slope = exchangeability(design, "byAge")
    np.testing.assert_array_equal(slope.blocks, sites)
    assert slope.record["ExchangeabilityBlocks"]["Blocks"] == {"A": 4, "B": 4}
    # within-site permutations: 4! x 4! distinct orderings instead of 8!
    x = design.design.to_numpy()
    assert count_rearrangements(8, "within", blocks=slope.blocks, design=x) == 24 * 24
    # without a site: free permutation, no variance groups
    plain = one_sample_design(pd.DataFrame({"subject": list("abcdefgh"),
                                            "age": [3, 1, 4, 1, 5, 9, 2, 6]}), ("age",))
    free = exchangeability(plain, "byAge")
    assert free.blocks is None and free.variance_groups is None
    assert free.record["ExchangeabilityBlocks"]["Description"] == "whole subjects permuted freely"
    assert free.record["VarianceGroupsUsed"]["Reason"] == "no site in the design (one variance group)"
    assert free.notes == []  # a single-site trial gets no warning about variance groups


def test_repeated_model_blocks_are_subjects_nested_in_sites():
    rows = pd.DataFrame([{"subject": f"{s:02d}", "condition": c, "period": p, "site": "AB"[s % 2]}
                         for s in range(1, 7) for p, c in enumerate(CONDITIONS, start=1)])
    design = add_site(repeated_measures_design(rows, CONDITIONS, trial_contrasts(CONDITIONS)), "site")
    ex = exchangeability(design, "dualMinusScs")
    np.testing.assert_array_equal(ex.blocks, rows["subject"])
    np.testing.assert_array_equal(ex.variance_groups, rows["site"])
    assert "nested in sites" in ex.record["ExchangeabilityBlocks"]["Description"]


def test_variance_group_modes():
    design = _one_sample(list("AAAAAB"))  # site B has one subject: its variance is unknown
    auto = exchangeability(design, "intercept", "auto")
    assert auto.variance_groups is None and "no residual degrees of freedom" in auto.notes[0]
    with pytest.raises(SpecError, match="variance_groups = site"):
        exchangeability(design, "intercept", "site")
    none = exchangeability(_one_sample(list("AAABBB")), "intercept", "none")
    assert none.variance_groups is None and not none.notes
    assert none.record["VarianceGroupsUsed"] == {"Requested": "none", "Unit": None,
                                                 "Reason": "inference.variance_groups is none"}
    no_site = one_sample_design(pd.DataFrame({"subject": list("abcd")}))
    with pytest.raises(SpecError, match="has no site"):
        exchangeability(no_site, "intercept", "site")
    with pytest.raises(SpecError, match="choose auto, none or site"):
        exchangeability(no_site, "intercept", "sites")


def test_site_blocked_max_t_keeps_the_familywise_error_rate_under_a_two_site_null():
    """A covariate's slope, 10 + 10 subjects at two sites (noise SD 1 and 3, the covariate higher
    at site B): max-t over 300 voxels with whole subjects permuted within site, 500 datasets."""
    from scipy import stats

    from fmri_pain.glm.inference.permutation import permutation_test

    rng = np.random.default_rng(14)
    sites = np.repeat(["A", "B"], 10)
    sd = np.where(sites == "A", 1.0, 3.0)[:, None]
    hits = 0
    for _ in range(500):
        age = rng.normal(size=20) + 1.0 * (sites == "B")
        design = _one_sample(list(sites), covariate=age)
        ex = exchangeability(design, "byAge", "none")
        Y = rng.normal(size=(20, 300)) * sd + 2.0 * (sites == "B")[:, None]
        r = permutation_test(Y, design.design.to_numpy(), design.contrasts["byAge"], n_perm=99,
                             blocks=ex.blocks, two_sided=True, random_state=rng)
        assert r.scheme == "within"
        hits += bool(r.p_fwe.min() <= 0.05)
    lo, hi = stats.binom.interval(0.95, 500, 0.05)  # (16, 35)
    assert lo <= hits <= hi, hits
