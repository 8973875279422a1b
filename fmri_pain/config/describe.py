"""The JSON Schema of a spec section class, with its docstrings as descriptions.

pydantic writes the schema of a section (types, ``ge/gt/le/lt`` ranges, ``Literal``
values, string patterns, the ``unit`` and ``form`` of :mod:`fmri_pain.config.fields`);
this module adds the meaning of each key (its attribute docstring, or the numpydoc
``Parameters`` entry of the section's class docstring), the class summary, and the
defaults of fields built by a factory. The spec's own schema (``docs/spec.schema.json``)
is :func:`fmri_pain.config.schema.json_schema`.
"""

from __future__ import annotations

import ast
import copy
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

__all__ = ["field_docs", "constraint_schema", "section_schema", "resolve"]

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


@functools.lru_cache(maxsize=64)
def constraint_schema(cls: type) -> dict[str, Any]:
    """pydantic's JSON Schema of ``cls`` alone: types, ranges, units, forms, no descriptions (cached).

    What an error message needs (the range of a key), without reading any source for docstrings.
    """
    return TypeAdapter(cls).json_schema()


@functools.lru_cache(maxsize=64)
def section_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the dataclass ``cls`` (cached: do not modify it).

    Parameters
    ----------
    cls : dataclass type
        A spec section (or any dataclass pydantic can describe).
    """
    schema = copy.deepcopy(constraint_schema(cls))
    defs = schema.get("$defs", {})
    for section in _section_classes(cls):
        node = schema if section is cls else defs.get(section.__name__)
        if node is not None:
            _describe_section(section, node)
    return {"$schema": SCHEMA_DIALECT, **schema}


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` followed (``#/$defs/Name``)."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema["$defs"][ref.rsplit("/", 1)[-1]]
    return node


def print_or_check(text: str, argv: list[str], module: str) -> int:
    """``python -m <module> [--check FILE]``: print ``text``, or exit 1 if FILE differs from it.

    The command line of the generated documents (docs/spec.md, docs/spec.schema.json).
    """
    if argv[:1] == ["--check"] and len(argv) == 2:
        with open(argv[1], encoding="utf-8") as fh:
            if fh.read() != text:
                print(f"{argv[1]} is out of date: run `python -m {module} > {argv[1]}`", file=sys.stderr)
                return 1
        return 0
    if argv:
        print(f"usage: python -m {module} [--check FILE]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
