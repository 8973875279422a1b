"""docs/spec.md is generated from the spec's own classes and must not drift."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.config.docs import field_docs, main, spec_reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            keys.extend(_leaf_keys(hints[field.name], key + "."))
        else:
            keys.append(key)
    return keys


def test_docs_spec_md_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == spec_reference_markdown(), (
        "docs/spec.md is out of date: run `python -m fmri_pain.config.docs > docs/spec.md`")
    assert main(["--check", str(DOC)]) == 0


def test_every_key_with_its_default_is_documented():
    text = spec_reference_markdown()
    defaults = AnalysisSpec()
    for key in _leaf_keys(AnalysisSpec):
        assert f"| `{key}` |" in text, key
    value = defaults.inference.n_perm
    assert f"| `inference.n_perm` | integer | `{value}` |" in text
    assert "| `first_level.confounds.strategy` | one of `motion24`" in text


def test_field_docs_reads_attribute_docstrings_and_numpydoc(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Example:
        """An example section.

        Parameters
        ----------
        a, b : int
            Shared meaning.
        c : str
            From numpydoc.
        """

        a: int = 1
        b: int = 2
        c: str = "x"
        """From the attribute docstring."""

    docs = field_docs(Example)
    assert docs == {"a": "Shared meaning.", "b": "Shared meaning.", "c": "From the attribute docstring."}
    text = spec_reference_markdown(Example)
    assert "| `c` | string | `\"x\"` |  | From the attribute docstring. |" in text
    stale = tmp_path / "spec.md"
    stale.write_text("old\n")
    assert main(["--check", str(stale)]) == 1


def test_every_numeric_key_has_a_documented_range():
    from fmri_pain.config.spec import key_range

    text = spec_reference_markdown()
    numeric = 0
    for path, cls in _numeric_fields(AnalysisSpec):
        field = next(f for f in dataclasses.fields(cls) if f.name == path.rsplit(".", 1)[-1])
        allowed = key_range(cls, field)
        assert allowed is not None, f"{path} has no range"
        assert f"| {allowed.describe()} |" in text.split(f"| `{path}` |", 1)[1].split("\n", 1)[0], path
        numeric += 1
    assert numeric > 30
    assert "| `first_level.smoothing_fwhm` | number or null | `6` | 0 ≤ x ≤ 30 mm |" in text
    assert "| `inference.cluster_forming_p` | number | `0.001` | 0 < x < 1 |" in text


def _numeric_fields(cls: type, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, prefix + field.name + ".")
            continue
        args = typing.get_args(tp) or (tp,)
        if field.name == "dummy_scans" or any(a in (int, float) for a in args):
            yield prefix + field.name, cls
