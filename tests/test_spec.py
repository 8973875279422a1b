"""The analysis spec: defaults, validation, the shipped YAML files."""

from pathlib import Path

import pytest

from fmri_pain.spec import AnalysisSpec, SpecError, load_spec, spec_from_dict

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_shipped_trial_spec_equals_the_defaults():
    assert load_spec(PIPELINES / "trial.yaml") == AnalysisSpec()


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_is_valid(path):
    load_spec(path)


def test_partial_spec_keeps_defaults():
    spec = spec_from_dict({"first_level": {"smoothing_fwhm": 4, "confounds": {"strategy": "acompcor"}}})
    assert spec.first_level.smoothing_fwhm == 4.0
    assert spec.first_level.confounds.strategy == "acompcor"
    assert spec.first_level.hrf_model == "spm"
    assert spec.conditions == ("SCS", "DRGS", "DUAL")


@pytest.mark.parametrize("data, message", [
    ({"first_levl": {}}, "unknown key.*first_levl"),
    ({"first_level": {"hrf": "spm"}}, r"first_level\.hrf"),
    ({"first_level": {"hrf_model": "gamma"}}, "hrf_model = 'gamma' is not one of"),
    ({"first_level": {"smoothing_fwhm": "six"}}, "smoothing_fwhm must be a number"),
    ({"group": {"covariates": "pain_relief"}}, "covariates must be a list"),
    ({"inference": {"n_perm": 10.5}}, "n_perm must be an integer"),
])
def test_bad_spec_names_the_key(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, source="my.yaml")


def test_unreadable_spec_file_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("first_level: [unclosed")
    with pytest.raises(SpecError, match="bad.yaml"):
        load_spec(bad)


def test_unquoted_yaml_on_key_gets_a_hint(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("events:\n  on: stim\n")
    with pytest.raises(SpecError, match="quote 'on'"):
        load_spec(path)
    path.write_text("events:\n  'on': stim\n")
    assert load_spec(path).events.on == "stim"
