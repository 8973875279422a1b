"""The JSON Schema of the spec: current, satisfied by the shipped specs, and agreeing with load_spec."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from fmri_pain.config.docs import field_docs
from fmri_pain.config.fields import SpecError, range_from_schema
from fmri_pain.config.inference import InferenceSpec
from fmri_pain.config.describe import resolve
from fmri_pain.config.schema import json_schema, main, schema_text
from fmri_pain.config.spec import AnalysisSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "spec.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_docs_spec_schema_json_is_up_to_date(tmp_path):
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "docs/spec.schema.json is out of date: run `python -m fmri_pain.config.schema > docs/spec.schema.json`")
    assert main(["--check", str(SCHEMA_FILE)]) == 0
    stale = tmp_path / "old.json"
    stale.write_text("{}\n")
    assert main(["--check", str(stale)]) == 1


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_satisfies_the_schema(validator, path):
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    errors = [e.message for e in validator.iter_errors(data)]
    assert errors == []


def test_trial_yaml_points_editors_at_the_schema():
    first = (ROOT / "pipelines" / "trial.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../docs/spec.schema.json"
    assert (ROOT / "pipelines" / first.split("=", 1)[1]).resolve() == SCHEMA_FILE


@pytest.mark.parametrize("yaml_text, message", [
    ("group: {fdr_q: -5}", r"group\.fdr_q = -5 is out of range \(0 < x < 1\)"),
    ("inference: {n_perm: 0}", r"inference\.n_perm = 0 is out of range \(1 ≤ x ≤ 1e\+06\)"),
    ("inference: {n_jobs: 0}", r"inference\.n_jobs = 0 is out of range \(-1 or 1 ≤ x ≤ 1024\)"),
    ("inference: {n_perm: true}", "inference.n_perm must be an integer"),
    ("group: {fdr_q: '0.05'}", "group.fdr_q must be a number"),
    ("first_level: {hrf_model: gamma}", "first_level.hrf_model = 'gamma' is not one of"),
    ("execution: {walltime: 2 hours}", "execution.walltime = '2 hours' is not"),
    ("preprocess: {high_pass: 128}", "preprocess.high_pass = 128 is a period in seconds"),
    ("first_levl: {}", "unknown key"),
    ("responders: {rules: [{at_least: 50}]}", r"responders\.rules\[0\]\.column is required"),
])
def test_a_bad_value_fails_both_the_schema_and_load_spec(validator, tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text + "\n")
    assert not validator.is_valid(yaml.safe_load(yaml_text))
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def _leaves(schema: dict, node: dict, prefix: str = ""):
    for name, prop in node.get("properties", {}).items():
        target = resolve(schema, prop)
        if "properties" in target:
            yield from _leaves(schema, target, f"{prefix}{name}.")
        else:
            yield prefix + name, target


def test_schema_defaults_are_the_spec_defaults():
    schema = json_schema()
    defaults = AnalysisSpec().to_dict()
    leaves = dict(_leaves(schema, schema))
    assert len(leaves) > 80
    for key, node in leaves.items():
        value = defaults
        for part in key.split("."):
            value = value[part]
        assert node["default"] == value, key
    assert leaves["preprocess.high_pass"]["default"] == 1 / 128 == leaves["first_level.high_pass"]["default"]
    assert leaves["pathways.high_pass"]["default"] is None


def test_schema_carries_the_docstrings_ranges_and_units():
    schema = json_schema()
    inference = resolve(schema, schema["properties"]["inference"])
    n_perm = inference["properties"]["n_perm"]
    assert n_perm["description"] == " ".join(field_docs(InferenceSpec)["n_perm"].split())
    assert (n_perm["minimum"], n_perm["maximum"], n_perm["type"]) == (1, 1_000_000, "integer")
    fl = resolve(schema, schema["properties"]["first_level"])
    assert range_from_schema(fl["properties"]["smoothing_fwhm"]).describe() == "0 ≤ x ≤ 30 mm"
    assert range_from_schema(inference["properties"]["n_jobs"]).describe() == "-1 or 1 ≤ x ≤ 1024"
    pre = resolve(schema, schema["properties"]["preprocess"])
    assert pre["properties"]["high_pass"]["unit"] == "Hz"
    assert "Cut-off frequency (Hz)" in pre["properties"]["high_pass"]["description"]  # numpydoc entry
    assert schema["additionalProperties"] is False and inference["additionalProperties"] is False
