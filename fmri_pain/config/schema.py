"""The JSON Schema of the analysis spec, generated from its pydantic sections.

One source of truth: ranges, allowed values and string forms are the pydantic constraints
of the sections (``fmri_pain.config.fields``), meanings are their attribute docstrings (or
the numpydoc ``Parameters`` of a section's class docstring, :mod:`fmri_pain.config.describe`).
``docs/spec.schema.json`` is this module's output, ``docs/spec.md`` is rendered from it
(``fmri_pain.config.docs``), and the range an error message quotes is read from it; tests
check the committed files are current::

    python -m fmri_pain.config.schema > docs/spec.schema.json

Editors that speak the YAML language server complete and check a spec file whose first line
is ``# yaml-language-server: $schema=<path to spec.schema.json>``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fmri_pain.config.describe import print_or_check, section_schema
from fmri_pain.config.spec import AnalysisSpec

__all__ = ["json_schema", "schema_text", "main"]


def json_schema(cls: type | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the spec, or of the section class ``cls``.

    Parameters
    ----------
    cls : dataclass type, optional
        Default :class:`fmri_pain.config.spec.AnalysisSpec` (titled "fmri-pain analysis spec").
    """
    if cls is not None and cls is not AnalysisSpec:
        return section_schema(cls)
    schema = section_schema(AnalysisSpec)
    return {"$schema": schema["$schema"], "title": "fmri-pain analysis spec",
            **{k: v for k, v in schema.items() if k != "$schema"}}


def schema_text() -> str:
    """The spec's JSON Schema as the text of ``docs/spec.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the schema; ``--check FILE`` exits 1 if FILE differs from it."""
    return print_or_check(schema_text(), sys.argv[1:] if argv is None else argv, "fmri_pain.config.schema")


if __name__ == "__main__":
    sys.exit(main())
