"""BIDS Stats Models out: the spec written as a model bsmschema accepts, read back as the same spec."""

import json

import pytest
from bsmschema.models import BIDSStatsModel
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri_pain.config.bsm import MOTION24, bsm_to_dict, expression_of, validate_bsm
from fmri_pain.config.bsm_export import CROSSOVER_NOTE, spec_to_bsm
from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.config.spec import AnalysisSpec, spec_from_dict

SPECS = {
    "defaults": {},
    "one condition, FIR, polynomial drift": {
        "task": None, "conditions": ["REST"], "events": {"on_trial_type": "face", "off_trial_type": "house"},
        "first_level": {"hrf_model": "fir", "fir_delays": [0, 1, 3], "drift_model": "polynomial",
                        "smoothing_fwhm": None, "noise_model": "ols",
                        "contrasts": {"faceMinusHalfHouse": "face - 0.5 * house", "scrambled": "scrambled"},
                        "confounds": {"strategy": "motion6", "scrub": False}}},
    "crossover options, covariates, acompcor": {
        "group": {"covariates": ["age", "vas_pain"], "carryover": True, "flip_to_pain_side": "none"},
        "first_level": {"hrf_model": "glover + derivative", "high_pass": 0.01, "drift_model": "cosine",
                        "confounds": {"strategy": "acompcor", "n_acompcor": 4}},
        "inference": {"n_perm": 500, "tfce": False}, "pathways": {"enabled": False}},
    "no confounds, no drift": {"first_level": {"drift_model": "none", "confounds": {"strategy": "none"}}},
}


def _back(model: dict) -> AnalysisSpec:
    validated = BIDSStatsModel.model_validate(json.loads(json.dumps(model)))  # as written to disk
    return spec_from_dict(bsm_to_dict(validated, "back.json"), "back.json")


@pytest.mark.parametrize("name", SPECS)
def test_round_trip_spec_to_bsm_to_spec(name):
    spec = spec_from_dict(SPECS[name])
    assert _back(spec_to_bsm(spec)) == spec


def test_contrasts_round_trip_by_weights_when_not_written_canonically():
    spec = spec_from_dict({"first_level": {"contrasts": {"faces": "(face + house) / 2 - scrambled"}}})
    back = _back(spec_to_bsm(spec))
    assert back.first_level.contrasts == {"faces": "0.5 * face + 0.5 * house - scrambled"}
    assert parse_contrast(back.first_level.contrasts["faces"]) == parse_contrast("(face + house) / 2 - scrambled")
    assert back.replace(first_level={**back.to_dict()["first_level"],
                                     "contrasts": spec.first_level.contrasts}) == spec


def test_between_subjects_tests_of_every_contrast_are_dataset_contrasts_else_software():
    tests = [{"name": "slope", "design": "covariate", "column": "age"},
             {"name": "patients", "design": "two-group", "column": "group", "levels": ["patient"]}]
    spec = spec_from_dict({"group": {"covariates": ["age"], "between_subjects": tests}})
    dataset = spec_to_bsm(spec)["Nodes"][-1]
    assert dataset["Model"]["X"] == [1, "age", "group.patient"]
    assert dataset["Contrasts"] == [
        {"Name": "slope", "ConditionList": ["age"], "Weights": [1], "Test": "t"},
        {"Name": "patients", "ConditionList": ["group.patient"], "Weights": [1], "Test": "t"}]
    assert "between_subjects" not in dataset["Model"]["Software"]["fmri-pain"]["group"]
    assert _back(spec_to_bsm(spec)) == spec
    one = spec_from_dict({"group": {"between_subjects": [{**tests[0], "contrast": "scs"}]}})
    dataset = spec_to_bsm(one)["Nodes"][-1]  # one contrast only, and age not adjusted for elsewhere
    assert dataset["Model"]["X"] == [1] and "Contrasts" not in dataset
    assert dataset["Model"]["Software"]["fmri-pain"]["group"]["between_subjects"][0]["contrast"] == "scs"
    assert _back(spec_to_bsm(one)) == one


def test_written_model_uses_bsm_fields_for_what_bsm_expresses():
    spec = spec_from_dict(SPECS["crossover options, covariates, acompcor"])
    model = spec_to_bsm(spec, name="my trial")
    validate_bsm(model)
    assert model["Name"] == "myTrial" and model["Input"] == {"task": ["stim"]}
    run, subject, dataset = model["Nodes"]
    assert run["Model"]["X"] == ["trial_type.on", *MOTION24, 1]
    assert run["Model"]["HRF"] == {"Variables": ["trial_type.on"], "Model": "glover + derivative"}
    assert run["Model"]["Options"] == {"HighPassFilterCutoffHz": 0.01}
    assert run["Contrasts"] == [{"Name": "stim", "ConditionList": ["trial_type.on"], "Weights": [1.0],
                                 "Test": "t"}]
    software = run["Model"]["Software"]["fmri-pain"]["first_level"]
    assert software["confounds"]["strategy"] == "acompcor" and "hrf_model" not in software
    assert (subject["Level"], subject["Model"]) == ("Subject", {"Type": "meta", "X": [1]})
    assert dataset["Model"]["X"] == [1, "age", "vas_pain"]
    assert dataset["Model"]["Software"]["fmri-pain"]["group"]["carryover"] is True
    assert CROSSOVER_NOTE in model["Description"] and "aCompCor" in model["Description"]


_NAMES = st.sampled_from(["face", "house", "scrambled", "cue", "on_late"])


def _tests(covariates):
    """``group.between_subjects`` entries, expressible in BSM's fields or only under Software."""
    return st.fixed_dictionaries({
        "name": st.sampled_from(["Age", "patients", "t2"]),
        "design": st.just("covariate"), "column": st.sampled_from([*covariates, "weight"]),
        "contrast": st.sampled_from([None, None, "stim"])}) | st.fixed_dictionaries({
            "name": st.sampled_from(["groups", "patients", "t3"]),
            "design": st.just("two-group"), "column": st.sampled_from(["group", "arm"]),
            "contrast": st.sampled_from([None, None, "stim"]),
            "levels": st.sampled_from([[], ["patient"], ["patient", "control"], ["a"]])})


@st.composite
def _specs(draw):
    weights = st.dictionaries(_NAMES, st.sampled_from([1.0, -1.0, 0.5, -0.25, 2.0, 1 / 3]), min_size=1,
                              max_size=3)
    contrasts = draw(st.dictionaries(st.sampled_from(["c1", "faceVsHouse", "X2"]), weights, max_size=3))
    covariates = draw(st.lists(st.sampled_from(["age", "vas_pain", "sex"]), unique=True, max_size=2))
    return {
        "task": draw(st.sampled_from([None, "stim", "nback"])),
        "events": {"on_trial_type": "on", "off_trial_type": draw(st.sampled_from([None, "off"]))},
        "first_level": {
            "hrf_model": draw(st.sampled_from(["spm", "spm + derivative", "glover", "fir"])),
            "drift_model": draw(st.sampled_from(["cosine", "polynomial", "none"])),
            "high_pass": draw(st.floats(0.001, 0.1)),
            "confounds": {"strategy": draw(st.sampled_from(["motion24", "motion6", "acompcor", "none", "auto"])),
                          "scrub": draw(st.booleans())},
            "contrasts": {name: expression_of(w) for name, w in contrasts.items()}},
        "group": {"covariates": covariates, "between_subjects": draw(st.lists(_tests(covariates), max_size=3,
                                                                             unique_by=lambda t: t["name"]))},
    }


@settings(max_examples=60, deadline=None)
@given(_specs())
def test_round_trip_holds_for_any_expressible_spec(data):
    spec = spec_from_dict(data)
    assert _back(spec_to_bsm(spec)) == spec
