"""The ``group.between_subjects`` key: loaded, defaults, and every bad entry named."""

import pytest

from fmri_pain.config.fields import SpecError
from fmri_pain.config.group import BetweenSubjectsTest
from fmri_pain.config.spec import spec_from_dict


def _spec(*tests):
    return spec_from_dict({"group": {"covariates": ["age"], "between_subjects": list(tests)}}, source="s.yaml")


def test_tests_are_loaded_with_their_defaults():
    spec = _spec({"name": "age", "design": "covariate", "column": "age", "contrast": "scs"},
                 {"name": "patients", "design": "two-group", "column": "group", "levels": ["patient"]})
    assert spec.group.between_subjects == (
        BetweenSubjectsTest("age", "covariate", "age", "scs"),
        BetweenSubjectsTest("patients", "two-group", "group", None, ("patient",)))
    assert spec_from_dict({}).group.between_subjects == ()


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "column": "c"}, r"group.between_subjects\[0\].design"),
    ({"name": "a", "design": "anova", "column": "c"}, "is not one of"),
    ({"name": "a b", "design": "covariate", "column": "c"}, r"\[0\].name = 'a b' must be letters"),
    ({"name": "a", "design": "covariate", "column": "c", "contrast": "scs-drgs"}, r"\[0\].contrast"),
    ({"name": "a", "design": "covariate", "column": ""}, r"\[0\].column must name"),
    ({"name": "a", "design": "covariate", "column": "c", "levels": ["x"]}, "only a two-group"),
    ({"name": "a", "design": "two-group", "column": "c", "levels": ["x", "x"]}, "distinct levels"),
    ({"name": "a", "design": "two-group", "column": "c", "levels": ["x", "y", "z"]}, "one or two"),
    ({"name": "a", "design": "two-group", "column": "c", "group": "x"}, "unknown key"),
])
def test_bad_entries_are_spec_errors_naming_the_key(entry, message):
    with pytest.raises(SpecError, match=message) as info:
        _spec(entry)
    assert str(info.value).startswith("s.yaml: ")


def test_a_name_used_twice_for_one_contrast_is_refused():
    entry = {"name": "a", "design": "covariate", "column": "c"}
    with pytest.raises(SpecError, match=r"between_subjects\[1\]: the name 'a' is used twice"):
        _spec(entry, entry)
    assert len(_spec(entry, {**entry, "contrast": "scs"}).group.between_subjects) == 2


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "design": "covariate", "column": "age", "contrast": "pain"},
     r"between_subjects\[0\].contrast = 'pain' is not a subject-level contrast"),
    ({"name": "scs", "design": "covariate", "column": "age", "contrast": "drgs"}, "would write the maps of scs"),
    ({"name": "MinusDrgs", "design": "covariate", "column": "age"}, "would write the maps of dualMinusDrgs"),
    ({"name": "byAge", "design": "covariate", "column": "age"}, "would write the maps of drgsByAge"),
])
def test_contrast_and_map_names_are_checked_against_the_trial(entry, message):
    with pytest.raises(SpecError, match=message):
        _spec(entry)


def test_two_tests_writing_the_same_maps_are_refused():
    with pytest.raises(SpecError, match=r"between_subjects\[1\].name = 'scsAge' would write the maps of scsAge"):
        _spec({"name": "Age", "design": "covariate", "column": "age"},
              {"name": "scsAge", "design": "covariate", "column": "age", "contrast": "drgs"})
    spec = spec_from_dict({"first_level": {"contrasts": {"painful": "on"}}, "group": {"between_subjects": [
        {"name": "x", "design": "covariate", "column": "age", "contrast": "painful"}]}})
    assert spec.group.between_subjects[0].contrast == "painful"
