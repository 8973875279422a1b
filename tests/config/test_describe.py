"""The schema of a section class: pydantic's, with the docstrings and factory defaults added."""

from __future__ import annotations

import dataclasses

from fmri_pain.config.describe import field_docs, resolve, section_schema
from fmri_pain.config.fields import bounded, spec_dataclass


@spec_dataclass
class _Inner:
    """An inner section.

    Parameters
    ----------
    depth : int
        From numpydoc.
    """

    depth: int = bounded(2, 0, 10, unit="m")


@spec_dataclass
class _Outer:
    """An outer section, with a summary.

    And more text that is not the summary.
    """

    names: tuple[str, ...] = dataclasses.field(default_factory=lambda: ("a", "b"))
    """The names."""
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_section_schema_has_descriptions_ranges_units_and_factory_defaults():
    schema = section_schema(_Outer)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["description"] == "An outer section, with a summary."
    names = schema["properties"]["names"]
    assert names == {"default": ["a", "b"], "description": "The names.", "items": {"type": "string"},
                     "type": "array"}
    inner = resolve(schema, schema["properties"]["inner"])
    assert inner["description"] == "An inner section."
    depth = inner["properties"]["depth"]
    assert (depth["minimum"], depth["maximum"], depth["unit"], depth["default"]) == (0, 10, "m", 2)
    assert depth["description"] == "From numpydoc." == field_docs(_Inner)["depth"]
    assert inner["additionalProperties"] is False
    assert section_schema(_Outer) is schema  # cached


def test_resolve_follows_only_local_refs():
    schema = {"$defs": {"A": {"type": "integer"}}}
    assert resolve(schema, {"$ref": "#/$defs/A"}) == {"type": "integer"}
    assert resolve(schema, {"type": "string"}) == {"type": "string"}


def test_constraint_schema_is_the_same_schema_without_the_descriptions():
    from fmri_pain.config.describe import constraint_schema

    bare, full = constraint_schema(_Outer), section_schema(_Outer)
    inner = resolve(bare, bare["properties"]["inner"])
    assert "description" not in inner["properties"]["depth"] and inner["properties"]["depth"]["maximum"] == 10
    assert set(bare["properties"]) == set(full["properties"])
