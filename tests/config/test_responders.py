"""The ``responders`` section: rules parsed as column + number, validated at load with the key named."""

import pytest

from fmri_pain.config.fields import SpecError
from fmri_pain.config.responders import RespondersSpec, ResponderRule
from fmri_pain.config.spec import AnalysisSpec, load_spec, spec_from_dict


def test_default_is_off_and_rules_switch_it_on():
    assert AnalysisSpec().responders == RespondersSpec()
    assert not AnalysisSpec().responders.active
    spec = spec_from_dict({"responders": {"rules": [{"column": "pain_relief", "at_least": 50}]}})
    assert spec.responders.active
    assert spec.responders.rules == (ResponderRule("pain_relief", 50.0, None),)
    assert spec.responders.describe() == "pain_relief >= 50"
    off = spec_from_dict({"responders": {"enabled": False, "rules": [{"column": "x", "at_most": 3}]}})
    assert not off.responders.active


def test_the_two_literature_rules_load_from_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("responders:\n  combine: all\n  conditions: [scs, DUAL]\n  rules:\n"
                    "    - {column: pain_relief, at_least: 30}\n"
                    "    - {column: vas_reduction_mm, at_least: 20}\n")
    spec = load_spec(path)
    assert spec.responders.describe() == "pain_relief >= 30 and vas_reduction_mm >= 20"
    assert spec.responders.conditions == ("scs", "DUAL")
    assert spec_from_dict(spec.to_dict()) == spec  # provenance round trip
    any_rule = spec_from_dict({"responders": {"combine": "any", "rules": [
        {"column": "pain_relief", "at_least": 50}, {"column": "vas_pain", "at_most": 3}]}})
    assert any_rule.responders.describe() == "pain_relief >= 50 or vas_pain <= 3"


@pytest.mark.parametrize("section, message", [
    ({"rules": [{"column": "pain_relief"}]}, r"responders\.rules\[0\] \(column pain_relief\) needs at_least"),
    ({"rules": [{"column": "x", "at_least": 1}, {"column": "pain relief", "at_least": 1}]},
     r"responders\.rules\[1\]\.column = 'pain relief' must be a column name"),
    ({"rules": [{"column": "x", "at_least": 5, "at_most": 1}]}, r"rules\[0\].*no session can pass"),
    ({"rules": [{"column": "x", "at_least": "50 if True else 0"}]}, r"rules\[0\]\.at_least must be a number"),
    ({"rules": [{"column": "x", "at_least": float("nan")}]}, r"rules\[0\]\.at_least must be a finite"),
    ({"rules": [{"column": "x", "above": 1}]}, r"unknown key.*responders\.rules\[0\]\.above"),
    ({"rules": {"column": "x", "at_least": 1}}, r"responders\.rules must be a list"),
    ({"enabled": True}, r"responders\.enabled is true but responders\.rules is empty"),
    ({"combine": "xor"}, r"responders\.combine = 'xor' is not one of"),
    ({"conditions": ["SCS", "placebo"]}, r"responders\.conditions\[1\] = 'placebo' is not among"),
    ({"conditions": ["SCS", "scs"]}, r"responders\.conditions .* repeat"),
    ({"map_permutations": -1}, r"responders\.map_permutations = -1 is out of range"),
])
def test_bad_responder_spec_names_the_key(section, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict({"responders": section}, source="my.yaml")
