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


@st.composite
def _specs(draw):
    weights = st.dictionaries(_NAMES, st.sampled_from([1.0, -1.0, 0.5, -0.25, 2.0, 1 / 3]), min_size=1,
                              max_size=3)
    contrasts = draw(st.dictionaries(st.sampled_from(["c1", "faceVsHouse", "X2"]), weights, max_size=3))
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
        "group": {"covariates": draw(st.lists(st.sampled_from(["age", "vas_pain", "sex"]), unique=True,
                                              max_size=2))},
    }


@settings(max_examples=60, deadline=None)
@given(_specs())
def test_round_trip_holds_for_any_expressible_spec(data):
    spec = spec_from_dict(data)
    assert _back(spec_to_bsm(spec)) == spec
