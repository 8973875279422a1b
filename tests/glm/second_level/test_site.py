"""Multi-centre trials: the site in the group designs, their sidecars and the permutation stage."""
from __future__ import annotations

import dataclasses
import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.config.fields import SpecError
from fmri_pain.config.spec import spec_from_dict
from fmri_pain.glm.inference.group_contrasts import inference_summary, run_permutation_inference
from fmri_pain.glm.inference.variance_groups import g_to_z
from fmri_pain.glm.second_level.models import (one_sample_design, paired_design,
                                               repeated_measures_design)
from fmri_pain.glm.second_level.outputs import model_record
from fmri_pain.glm.second_level.site import add_site, site_indicators, sites_by_subject
from fmri_pain.report.methods import group_section, inference_section
from fmri_pain.trial import CONDITIONS, trial_contrasts
from tests.glm.second_level.test_group_honesty import make_one_condition, make_trial
from tests.support.group import run_group_glm


def _rows(sites, **columns):
    return pd.DataFrame({"subject": [f"{i + 1:02d}" for i in range(len(sites))], "site": sites,
                         **columns})


def test_one_sample_design_gets_centred_site_indicators_and_its_t_is_the_within_site_one(caplog):
    caplog.set_level(logging.INFO)
    sites = ["A"] * 5 + ["B"] * 7 + ["C"] * 4
    rng = np.random.default_rng(0)
    y = rng.normal(size=16) + np.array([0.0, 2.0, -1.0])[pd.Series(sites).map(
        {"A": 0, "B": 1, "C": 2}).to_numpy()]
    design = add_site(one_sample_design(_rows(sites, age=rng.normal(50, 9, 16)), ("age",)), "site")
    assert list(design.design.columns) == ["intercept", "age", "site-B", "site-C"]
    assert design.terms == "intercept + site + age" and design.covariates == ["age"]
    assert design.sites == tuple(sites)
    np.testing.assert_allclose(design.design[["site-B", "site-C"]].sum(), 0.0, atol=1e-12)
    assert {k: len(v) for k, v in design.contrasts.items()} == {"intercept": 4, "byAge": 4}
    assert "site (site: A (5), B (7), C (4)) modelled with 2 mean-centred" in caplog.text
    assert not design.notes  # the site is what the spec asks for: logged, not a departure
    # without age: the intercept is the mean over subjects and its t uses the within-site variance
    plain = add_site(one_sample_design(_rows(sites)), "site")
    x = plain.design.to_numpy()
    beta, rss = np.linalg.lstsq(x, y, rcond=None)[:2]
    groups = pd.Series(y).groupby(sites)
    within = sum(((g - g.mean()) ** 2).sum() for _, g in groups) / (16 - 3)
    assert beta[0] == pytest.approx(y.mean())
    assert beta[0] / np.sqrt(within / 16) == pytest.approx(
        beta[0] / np.sqrt(rss[0] / (16 - 3) * np.linalg.inv(x.T @ x)[0, 0]))
    assert plain.residual_dof == 13
    record = model_record(plain, "intercept", list(_rows(sites)["subject"]), [], plain.notes)
    assert record["Sites"] == {"A": 5, "B": 7, "C": 4} and record["SiteModelled"] is True
    assert record["ModelTerms"] == "intercept + site"


def test_repeated_model_notes_that_site_is_absorbed_by_the_subjects_and_paired_adds_it():
    rows = pd.DataFrame([{"subject": f"{s:02d}", "condition": c, "period": p, "site": "AB"[s % 2]}
                         for s in range(1, 7) for p, c in enumerate(CONDITIONS, start=1)])
    design = add_site(repeated_measures_design(rows, CONDITIONS, trial_contrasts(CONDITIONS)), "site")
    assert not any(str(c).startswith("site-") for c in design.design.columns)
    assert design.sites == tuple(rows["site"]) and "site" not in design.terms
    assert any("not added to the repeated-measures model" in n and "subject columns" in n
               for n in design.notes)
    # the site indicator is indeed a sum of subject columns (it would add no rank)
    with_site = np.c_[design.design.to_numpy(), site_indicators(rows["site"]).to_numpy()]
    assert np.linalg.matrix_rank(with_site) == np.linalg.matrix_rank(design.design.to_numpy())
    paired = add_site(paired_design(_rows(list("AABBAB"), period_difference=[1, -1, 2, 1, -2, 1])),
                      "site")
    assert list(paired.design.columns) == ["intercept", "period_difference", "site-B"]
    assert paired.terms == "intercept + period difference + site"


def test_site_not_used_without_two_sites_or_with_gaps_and_refused_when_collinear():
    one = add_site(one_sample_design(_rows(["A"] * 4)), "site")
    assert list(one.design.columns) == ["intercept"] and one.sites == () and not one.notes
    assert add_site(one_sample_design(_rows(["A", "B", "A", "B"])), None).sites == ()
    gap = add_site(one_sample_design(_rows(["A", None, "B", "B"])), "site")
    assert gap.sites == () and gap.notes == ["site (site) not modelled: no value for sub-02"]
    with pytest.raises(ValueError, match="collinear"):
        add_site(one_sample_design(_rows(list("AABB"), dose=[1, 1, 2, 2]), ("dose",)), "site")
    table = pd.DataFrame({"subject": ["1", "1", "2"], "site": ["A", "B", "A"]})
    with pytest.raises(ValueError, match="differs between rows of 1"):
        sites_by_subject(table, "site")


def _sidecar(path):
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_group_level_of_a_two_site_study_models_and_records_the_site(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    spec = spec_from_dict({"events": {"on_trial_type": "stim"}, "pathways": {"enabled": False},
                           "inference": {"n_perm": 300, "tfce": True}})
    sites = ["north"] * 4 + ["south"] * 4
    runs = make_one_condition(tmp_path, 8, spec, site=sites)
    group = run_group_glm(tmp_path, runs, spec)
    stim = next(m for m in group.maps if m.contrast == "stim")
    assert list(stim.design.design.columns) == ["intercept", "site-south"]
    side = _sidecar(stim.paths["t"])
    assert side["ModelTerms"] == "intercept + site"
    assert side["Sites"] == {"north": 4, "south": 4} and side["SiteModelled"] is True
    assert "site (site: north (4), south (4)) modelled" in caplog.text
    assert not any("site" in w for w in side["Warnings"])

    assert ("Subjects came from 2 sites; site entered the models of stim as mean-centred "
            "indicator columns") in group_section(group, spec).text
    permutations = run_permutation_inference(group, spec.inference, alpha=0.05)
    methods = inference_section(permutations, spec).text
    assert "stim used the G statistic" in methods and "TFCE enhanced those z maps" in methods
    summary = inference_summary(permutations, 0.05).set_index("contrast")
    assert summary.loc["stim", "statistic"] == "G (site variance groups)"
    outputs = {o.contrast: o for o in permutations}
    # intercept: sign flips of independent subjects, G with site variance groups (auto)
    out = outputs["stim"]
    side = _sidecar(out.paths["logp_fwe"])
    assert side["ExchangeabilityBlocks"]["Unit"] is None
    assert "site blocks do not restrict them" in side["ExchangeabilityBlocks"]["Description"]
    assert side["VarianceGroupsUsed"] == {"Requested": "auto", "Unit": "site",
                                          "Reason": "one group per site"}
    assert side["VarianceGroups"]["Statistic"].startswith("G")
    assert "with the G statistic (site variance groups)" in side["Description"]
    assert side["VarianceGroups"]["Groups"] == {"north": 4, "south": 4}
    assert any("cluster-mass inference are not computed" in w for w in side["PermutationWarnings"])
    assert side["Parameters"]["statistic"] == "G" and side["Parameters"]["tfce_on"] == "z(G)"
    assert "logp_tfce_fwe" in out.paths and out.result.p_tfce_fwe.min() >= 2 / 256 - 1e-12
    assert side["Parameters"]["cluster_threshold"] is None
    assert out.result.scheme == "signflip" and out.result.exhaustive  # 2^8 = 256 flips
    # the global flip ties with the data (two-sided): no p below 2 / 256, FWE p >= uncorrected p
    assert out.result.p_uncorrected.min() >= 2 / 256 - 1e-12
    assert side["MinimumAttainableP"] == pytest.approx(2 / 256) and out.result.n_identity == 1
    assert np.all(out.result.p_fwe >= out.result.p_uncorrected)
    np.testing.assert_allclose(out.result.z, g_to_z(out.result.stat, out.result.stat_df, 1))
    z_img = nib.load(out.paths["z_fwe"])
    assert z_img.shape == nib.load(group.mask).shape

    # variance_groups = none: t, with the same blocks
    none = dataclasses.replace(spec.inference, variance_groups="none")
    out = {o.contrast: o for o in run_permutation_inference(group, none, alpha=0.05)}["stim"]
    assert out.result.variance_groups is None and out.result.z is None
    side = _sidecar(out.paths["logp_fwe"])
    assert side["VarianceGroups"] is None and side["VarianceGroupsUsed"]["Unit"] is None
    # the one-sample t of the parametric model, computed here from the design
    x = stim.design.design.to_numpy()
    inside = np.asarray(nib.load(group.mask).dataobj) > 0
    y = np.stack([np.asarray(img.dataobj, dtype=float)[inside] for img in stim.load_images()])
    beta, rss = np.linalg.lstsq(x, y, rcond=None)[:2]
    t = beta[0] / np.sqrt(rss / (8 - 2) * np.linalg.inv(x.T @ x)[0, 0])
    np.testing.assert_allclose(out.result.stat, t, rtol=1e-6)


def test_trial_permutations_stay_within_subject_or_site_and_site_groups_are_recorded(tmp_path):
    spec = spec_from_dict({"pathways": {"enabled": False}, "group": {"covariates": ["pain_relief"]},
                           "inference": {"n_perm": 20, "tfce": False}})
    relief = {f"{i:02d}": r for i, r in enumerate([0.2, 0.5, 0.1, 0.7, 0.4, 0.9, 0.3, 0.6], 1)}
    runs = make_trial(tmp_path, 8, spec, covariate=lambda sub, cond: relief[sub])
    for run in runs:
        run.covariates["site"] = "A" if int(run.subject) <= 4 else "B"
    group = run_group_glm(tmp_path, runs, spec)
    repeated = next(m for m in group.maps if m.route == "repeated")
    assert any("not added to the repeated-measures model" in w for w in repeated.warnings)
    assert "absorbed by the subject terms, so it was not added" in group_section(group, spec).text
    outputs = {o.contrast: o for o in run_permutation_inference(group, spec.inference, alpha=0.05)}
    out = outputs["dualMinusScs"]
    assert out.route == "repeated" and out.result.scheme == "within"
    side = _sidecar(out.paths["logp_fwe"])
    assert side["ExchangeabilityBlocks"]["Unit"] == "subject"
    assert "nested in sites" in side["ExchangeabilityBlocks"]["Description"]
    assert side["VarianceGroupsUsed"]["Unit"] == "site"
    # a between-subject slope: whole subjects permuted within site (4! orderings per site)
    slope = outputs["scsByPainRelief"]
    side = _sidecar(slope.paths["logp_fwe"])
    assert side["ExchangeabilityBlocks"] == {"Unit": "site",
                                             "Description": "whole subjects permuted within site",
                                             "Blocks": {"A": 4, "B": 4}}
    assert slope.result.scheme == "within" and slope.result.n_distinct == 24 ** 2
    # a site of one subject: auto falls back to one variance group and says why
    for run in runs:
        run.covariates["site"] = "A" if int(run.subject) <= 7 else "B"
    group = run_group_glm(tmp_path, runs, spec)
    outputs = {o.contrast: o for o in run_permutation_inference(group, spec.inference, alpha=0.05)}
    assert outputs["scs"].result.variance_groups is None
    assert any("variance groups not used" in w for w in outputs["scs"].result.warnings)
    site_only = dataclasses.replace(spec.inference, variance_groups="site")
    with pytest.raises(SpecError, match="inference.variance_groups = site"):
        run_permutation_inference(group, site_only, alpha=0.05)


def test_sequence_test_models_site_and_permutes_subjects_within_site(tmp_path):
    spec = spec_from_dict({"pathways": {"enabled": False}, "group": {"carryover": True},
                           "inference": {"n_perm": 20, "tfce": False}})
    runs = make_trial(tmp_path, 8, spec)
    for run in runs:
        run.covariates["site"] = "A" if int(run.subject) <= 4 else "B"
    group = run_group_glm(tmp_path, runs, spec)
    sequence = next(m for m in group.maps if m.route == "sequence")
    assert "site-B" in sequence.design.design.columns
    outputs = {o.contrast: o for o in run_permutation_inference(group, spec.inference, alpha=0.05)}
    seq = outputs["sequenceF"]
    assert seq.result.scheme == "within"  # whole subjects, within their site
    side = _sidecar(seq.paths["logp_fwe"])
    assert side["ExchangeabilityBlocks"]["Unit"] == "site"
    assert side["ExchangeabilityBlocks"]["Blocks"] == {"A": 4, "B": 4}
