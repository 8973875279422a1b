"""Contrast expressions are parsed by the project, never evaluated (issue 16 item 1)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmri_pain.config.contrast_expressions import MAX_DEPTH, ContrastExpressionError, parse_contrast
from fmri_pain.glm.first_level.events import expression_weights

FUZZ = settings(max_examples=int(os.environ.get("FMRI_PAIN_FUZZ_EXAMPLES", 300)), derandomize=True,
                deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
NAMES = ["on", "off", "rating", "F1", "F2", "N_1", "face", "house"]


@pytest.mark.parametrize("expression, expected", [
    ("on", {"on": 1.0}),
    ("on - rating", {"on": 1.0, "rating": -1.0}),
    ("(F1 + F2) / 2 - N_1", {"F1": 0.5, "F2": 0.5, "N_1": -1.0}),
    ("2*face - 0.5 * house", {"face": 2.0, "house": -0.5}),
    ("-(-on)", {"on": 1.0}),
    ("on / 4 * 2", {"on": 0.5}),
    ("1e-1 * on + .5*off", {"on": 0.1, "off": 0.5}),
    ("3 * (face - house) / 3", {"face": 1.0, "house": -1.0}),
    ("face + house - house", {"face": 1.0, "house": 0.0}),
])
def test_parse_gives_the_weights(expression, expected):
    weights = parse_contrast(expression)
    assert weights.keys() == expected.keys()
    for name, w in expected.items():
        assert math.isclose(weights[name], w, abs_tol=1e-12)


@pytest.mark.parametrize("expression, message", [
    ("on.to_csv('/tmp/x', header=['x'], index=False)", r"character '\.'"),
    ("__import__('os').system('id')", "not allowed"),
    ("on @ off", "not allowed"),
    ("on[0]", "not allowed"),
    ("on ** 2", "unexpected"),
    ("on * off", "product of two trial-type terms"),
    ("(on + off) * (on - off)", "product"),
    ("1 / on", "division by a trial-type term"),
    ("on / 0", "division by zero"),
    ("on / (1 - 1)", "division by zero"),
    ("on + 1", "constant term"),
    ("2", "constant term"),
    ("on - on", "no non-zero weight"),
    ("", "empty"),
    ("   ", "empty"),
    ("(on", "not closed"),
    ("on)", "unexpected"),
    ("on off", "unexpected"),
    ("on +", "ends too early"),
    ("1e999 * on", "out of range"),
    ("on if off else rating", "unexpected"),
    ("ön", "not allowed"),
    ("on\n- off", "not allowed"),
    ("(" * (MAX_DEPTH + 1) + "on" + ")" * (MAX_DEPTH + 1), "nested"),
    ("-" * (MAX_DEPTH + 1) + "on", "nested"),
    ("on + " * 300 + "on", "longer than"),
])
def test_everything_else_is_rejected(expression, message):
    with pytest.raises(ContrastExpressionError, match=message):
        parse_contrast(expression)


def test_non_string_is_rejected():
    with pytest.raises(ContrastExpressionError, match="must be a string"):
        parse_contrast(["on"])  # type: ignore[arg-type]


def test_expression_weights_checks_the_run_trial_types():
    assert expression_weights("face - house", ["house", "face", "rest"]) == {"house": -1.0, "face": 1.0}
    with pytest.raises(ValueError, match="'scrambled' not among"):
        expression_weights("face - scrambled", ["face", "house"])
    # weights that cancel still need their trial type
    with pytest.raises(ValueError, match="'house'"):
        expression_weights("face + house - house", ["face"])


# ----------------------------------------------------------------------- agreement with nilearn
_NUMBER = st.one_of(
    st.integers(1, 9).map(str),
    st.sampled_from(["0.5", "0.25", "1.5", "2.0", "1e-1", ".5", "3"]),
)


@st.composite
def _linear_expressions(draw, depth: int = 0) -> str:
    """Random linear expressions over NAMES (no constant terms, no products of names)."""
    n_terms = draw(st.integers(1, 4))
    parts = []
    for i in range(n_terms):
        kind = draw(st.sampled_from(["name", "scaled", "divided", "group"] if depth < 2 else
                                    ["name", "scaled", "divided"]))
        name = draw(st.sampled_from(NAMES))
        if kind == "name":
            term = name
        elif kind == "scaled":
            term = f"{draw(_NUMBER)} * {name}" if draw(st.booleans()) else f"{name}*{draw(_NUMBER)}"
        elif kind == "divided":
            term = f"{name} / {draw(_NUMBER)}"
        else:
            term = f"{draw(_NUMBER)} * ({draw(_linear_expressions(depth + 1))})"
        sign = draw(st.sampled_from(["+", "-"])) if i else draw(st.sampled_from(["", "-"]))
        parts.append(f"{sign} {term}" if sign else term)
    return " ".join(parts)


@FUZZ
@given(_linear_expressions())
def test_weights_equal_nilearns_expression_to_contrast_vector(expression):
    from nilearn.glm.contrasts import expression_to_contrast_vector

    try:
        weights = parse_contrast(expression)
    except ContrastExpressionError as exc:
        assert "no non-zero weight" in str(exc)  # e.g. "on - on": nilearn gives a zero vector
        assert np.allclose(expression_to_contrast_vector(expression, NAMES), 0)
        return
    ours = np.array([weights.get(n, 0.0) for n in NAMES])
    theirs = np.asarray(expression_to_contrast_vector(expression, NAMES), dtype=float)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------- fuzzing (issue 16 item 8)
_ADVERSARIAL = st.sampled_from([
    "on", "off", "(", ")", "+", "-", "*", "/", "**", ".", "e", "1", "0", "1e309", "1e", "_", "'",
    '"', "to_csv", "(", "@", "[", "]", ",", "=", "lambda", "__class__", " ", "\t", "\n", "\x00",
    "ä", "∞", "nan", "inf", "0x1f", "1_000", "#", ";", ":", "`",
])


@FUZZ
@given(st.one_of(st.text(max_size=80), st.lists(_ADVERSARIAL, max_size=40).map("".join)))
def test_random_and_adversarial_strings_raise_only_contrast_errors(expression):
    try:
        weights = parse_contrast(expression)
    except ContrastExpressionError:
        return
    assert weights and all(isinstance(k, str) and k.isidentifier() for k in weights)
    assert all(math.isfinite(w) for w in weights.values()) and any(weights.values())


def test_no_module_of_the_package_evaluates_strings():
    """Guard: nothing calls eval/exec, pandas' eval/query, or nilearn's expression parser."""
    import ast
    from pathlib import Path

    import fmri_pain

    forbidden = {"eval", "exec", "expression_to_contrast_vector", "literal_eval"}
    methods = forbidden | {"query"}  # DataFrame.eval / DataFrame.query evaluate strings too
    found = []
    for path in Path(fmri_pain.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                if (isinstance(func, ast.Name) and func.id in forbidden) or \
                        (isinstance(func, ast.Attribute) and func.attr in methods):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(func)}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                found.extend(f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                             if a.name in forbidden)
    assert not found, found


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(["c1", "faceMinusHouse", "stim", "a-b", ""]),
                                 st.text(max_size=12)),
                       st.one_of(st.text(max_size=60), st.lists(_ADVERSARIAL, max_size=30).map("".join),
                                 _linear_expressions()), max_size=3))
def test_random_contrasts_in_a_spec_raise_only_spec_errors_naming_the_contrast(contrasts):
    from fmri_pain.config.fields import SpecError
    from fmri_pain.config.spec import spec_from_dict

    try:
        spec = spec_from_dict({"first_level": {"contrasts": contrasts}}, source="fuzz.yaml")
    except SpecError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml: first_level.contrasts") and len(message) < 1000, message
        return
    for name, expression in spec.first_level.contrasts.items():
        assert name.isalnum() and parse_contrast(expression)
