"""The JSON Schema of the analysis spec, generated from its pydantic sections.

One source of truth: ranges, allowed values and string forms are the pydantic constraints
of the sections (``fmri_pain.config.fields``), meanings are their attribute docstrings (or
the numpydoc ``Parameters`` of a section's class docstring). ``docs/spec.schema.json`` is
this module's output, ``docs/spec.md`` is rendered from it (``fmri_pain.config.docs``), and
the range an error message quotes is read from it; a test checks the committed files are
current::

    python -m fmri_pain.config.schema > docs/spec.schema.json

Editors that speak the YAML language server complete and check a spec file whose first line
is ``# yaml-language-server: $schema=<path to spec.schema.json>``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import re
import sys
import textwrap
import typing
from typing import Any

from pydantic import TypeAdapter

__all__ = ["field_docs", "json_schema", "schema_text", "resolve", "main"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def field_docs(cls: type) -> dict[str, str]:
    """Meaning of each field of dataclass ``cls``.

    Attribute docstrings (string literals right after a field) take
    precedence; otherwise the entry of the class docstring's numpydoc
    ``Parameters`` section is used (an entry ``a, b, c :`` documents all three).
    """
    docs = _numpydoc_parameters(inspect.getdoc(cls) or "")
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return docs
    tree = ast.parse(source)
    class_def = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    body = class_def.body
    for node, following in zip(body, body[1:] + [None]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _numpydoc_parameters(doc: str) -> dict[str, str]:
    match = re.search(r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, flags=re.S | re.M)
    if not match:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in match.group(1).splitlines():
        if line and not line[0].isspace():
            names = [n.strip() for n in line.split(":", 1)[0].split(",") if n.strip()]
            for name in names:
                out[name] = ""
        elif names and line.strip():
            for name in names:
                out[name] = (out[name] + " " + line.strip()).strip()
    return out


def _section_classes(cls: type) -> list[type]:
    """``cls`` and every dataclass reachable through its fields (sections, items of lists)."""
    out, todo = [], [cls]
    while todo:
        current = todo.pop(0)
        if current in out:
            continue
        out.append(current)
        for tp in typing.get_type_hints(current).values():
            for arg in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(arg):
                    todo.append(arg)
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _describe_section(cls: type, node: dict[str, Any]) -> None:
    summary = (inspect.getdoc(cls) or "").split("\n\n")[0]
    node.pop("title", None)
    if summary:
        node["description"] = " ".join(summary.split())
    else:
        node.pop("description", None)
    docs = field_docs(cls)
    properties = node.get("properties", {})
    for spec_field in dataclasses.fields(cls):
        prop = properties.get(spec_field.name)
        if prop is None:
            continue
        prop.pop("title", None)
        if docs.get(spec_field.name):
            prop["description"] = " ".join(docs[spec_field.name].split())
        factory = spec_field.default_factory
        if "default" not in prop and factory is not dataclasses.MISSING:
            value = factory()
            if not dataclasses.is_dataclass(value):
                prop["default"] = _jsonable(value)


def json_schema(cls: type | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the spec, or of the section class ``cls``.

    Parameters
    ----------
    cls : dataclass type, optional
        Default :class:`fmri_pain.config.spec.AnalysisSpec`.
    """
    if cls is None:
        from fmri_pain.config.spec import AnalysisSpec

        return {"$schema": SCHEMA_DIALECT, "title": "fmri-pain analysis spec", **_build_schema(AnalysisSpec)}
    return {"$schema": SCHEMA_DIALECT, **_build_schema(cls)}


@functools.lru_cache(maxsize=64)
def _build_schema(cls: type) -> dict[str, Any]:
    # cached: error messages read a section's range from it (the result is never mutated)
    schema = TypeAdapter(cls).json_schema()
    defs = schema.get("$defs", {})
    for section in _section_classes(cls):
        node = schema if section is cls else defs.get(section.__name__)
        if node is not None:
            _describe_section(section, node)
    return schema


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` followed (``#/$defs/Name``)."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema["$defs"][ref.rsplit("/", 1)[-1]]
    return node


def schema_text() -> str:
    """The spec's JSON Schema as the text of ``docs/spec.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the schema; ``--check FILE`` exits 1 if FILE differs from it."""
    argv = sys.argv[1:] if argv is None else argv
    text = schema_text()
    if argv[:1] == ["--check"] and len(argv) == 2:
        with open(argv[1], encoding="utf-8") as fh:
            if fh.read() != text:
                print(f"{argv[1]} is out of date: run `python -m fmri_pain.config.schema > {argv[1]}`",
                      file=sys.stderr)
                return 1
        return 0
    if argv:
        print("usage: python -m fmri_pain.config.schema [--check FILE]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
