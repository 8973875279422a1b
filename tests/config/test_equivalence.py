"""The ``equivalence`` section: tests of contrasts against a margin, validated at load."""

from __future__ import annotations

import pytest

from fmri_pain.config.equivalence import EquivalenceTest
from fmri_pain.config.fields import SpecError
from fmri_pain.config.spec import spec_from_dict


def test_tests_load_with_their_keys():
    spec = spec_from_dict({"equivalence": {"alpha": 0.025, "maps": False, "tests": [
        {"contrast": "drgsMinusScs", "kind": "non-inferiority", "margin": 0.2, "unit": "dz"},
        {"contrast": "dualMinusMean", "kind": "superiority", "margin": 0},
        {"contrast": "drgsMinusScs", "kind": "equivalence", "margin": 0.5}]}})
    section = spec.equivalence
    assert section.alpha == 0.025 and section.maps is False
    assert section.tests[0] == EquivalenceTest("drgsMinusScs", "non-inferiority", 0.2, "dz")
    assert section.tests[1].margin == 0.0 and section.tests[1].unit == "psc"
    assert spec.to_dict()["equivalence"]["tests"][2] == {
        "contrast": "drgsMinusScs", "kind": "equivalence", "margin": 0.5, "unit": "psc"}


@pytest.mark.parametrize("tests, message", [
    ([{"contrast": "conditionF"}], r"equivalence.tests\[0\].contrast = 'conditionF' is not a t contrast"),
    ([{"contrast": "scsMinusDrgs"}], r"equivalence.tests\[0\].contrast = 'scsMinusDrgs'"),
    ([{"margin": 0.1}, {"kind": "equivalence", "margin": 0}],
     r"equivalence.tests\[1\].margin = 0.0 must be > 0 for a equivalence"),
    ([{"margin": -1}], r"equivalence.tests\[0\].margin = -1 is out of range"),
    ([{"unit": "dz"}], r"equivalence.tests\[0\].unit = 'dz' cannot be mapped voxelwise"),
    ([{"kind": "superior"}], r"equivalence.tests\[0\].kind = 'superior' is not one of"),
    ([{"margin": 0.1}, {"margin": 0.2}], r"equivalence.tests\[1\]: contrast drgsMinusScs has two"),
    ([{"contrast": "drgsMinusScs", "extra": 1}], r"unknown key\(s\) equivalence.tests\[0\].extra"),
])
def test_bad_tests_are_spec_errors_naming_the_key(tests, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict({"equivalence": {"tests": tests}})


def test_contrasts_follow_the_spec_conditions():
    spec = spec_from_dict({"conditions": ["A", "B"], "equivalence": {
        "tests": [{"contrast": "bMinusA", "margin": 1.0}]}})
    assert spec.equivalence.tests[0].contrast == "bMinusA"
    with pytest.raises(SpecError, match="drgsMinusScs' is not a t contrast"):
        spec_from_dict({"conditions": ["A", "B"], "equivalence": {"tests": [{"margin": 1.0}]}})
