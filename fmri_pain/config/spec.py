"""The analysis spec: one validated object, loaded from YAML/JSON with defaults.

The defaults live in ``pipelines/trial.yaml`` (and mirror the dataclass defaults
below, which a test checks). A user spec only lists what it changes; an unknown
key or a value of the wrong type, outside its allowed set or outside its range
is a :class:`SpecError` that names the key and the file. Every section is a
pydantic dataclass (:func:`fmri_pain.config.fields.spec_dataclass`): types are
strict (``true`` is not a number, ``"5"`` is not a number), ranges and allowed
values are pydantic constraints, published as a JSON Schema
(``docs/spec.schema.json``, :mod:`fmri_pain.config.schema`) from which
``docs/spec.md`` is rendered. pydantic's first error becomes a one-line
:class:`SpecError`. Contrast expressions are parsed (never evaluated) when the
spec is loaded.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import StrictInt, StrictStr

from fmri_pain.config.equivalence import EquivalenceSpec, check_equivalence
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.execution import ExecutionSpec
from fmri_pain.config.fields import (LABEL_RE, MAX_ECHO, Pattern, Range, SpecError, bounded, range_from_schema,
                                     shown, spec_dataclass)
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.config.group import GroupSpec, check_between_subjects
from fmri_pain.config.inference import InferenceSpec
from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.config.preprocess import PreprocessSpec
from fmri_pain.config.responders import RespondersSpec
from fmri_pain.config.describe import constraint_schema, resolve
from fmri_pain.trial import CONDITIONS, difference_contrasts, trial_contrasts

LOGGER = logging.getLogger(__name__)


@spec_dataclass
class AnalysisSpec:
    """Everything that shapes an analysis, passed down to every stage."""

    conditions: tuple[StrictStr, ...] = CONDITIONS
    """Condition names; session labels and sessions.tsv ``condition`` map to them case-insensitively."""
    task: StrictStr | None = "stim"
    """BIDS task to analyse (null: the only task in the dataset)."""
    space: StrictStr | None = None
    """Template space of the preprocessed data read (every output is named by the space of its data).
    null: on the raw route, the template of the project's own preprocessing (``MNI152NLin2009aSym``,
    nilearn's bundled ICBM 2009a symmetric T1); with ``--derivatives``, the one space each run has
    there (among several, fMRIPrep's default ``MNI152NLin2009cAsym`` with a warning; without it, an
    error naming them). A value selects that space among fMRIPrep's outputs (e.g.
    ``MNI152NLin2009cAsym``, ``MNI152NLin6Asym``)."""
    events: EventsSpec = field(default_factory=EventsSpec)
    min_volumes: StrictInt = bounded(20, 1, 100_000)
    """Runs with fewer volumes are rejected as input errors."""
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    first_level: FirstLevelSpec = field(default_factory=FirstLevelSpec)
    group: GroupSpec = field(default_factory=GroupSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    pathways: PathwaysSpec = field(default_factory=PathwaysSpec)
    equivalence: EquivalenceSpec = field(default_factory=EquivalenceSpec)
    responders: RespondersSpec = field(default_factory=RespondersSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for provenance sidecars)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def replace(self, **changes: Any) -> AnalysisSpec:
        """A copy with top-level fields changed (nested: pass a dict)."""
        return spec_from_dict({**self.to_dict(), **changes})


MAX_SPEC_BYTES = 1_000_000
"""Largest spec file read."""

_ALIASES = (
    ("events", "on", "events", "on_trial_type"),
    ("events", "off", "events", "off_trial_type"),
    ("pathways", "on_trial_type", "events", "on_trial_type"),
)
"""Deprecated keys: (section, key) -> (section, key) that replaces it."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue  # merged keys may be overridden; complex keys are refused by SafeLoader
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {shown(key)} is written twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _field_node(cls: type, name: str) -> dict[str, Any]:
    schema = constraint_schema(cls)
    node = resolve(schema, schema["properties"][name])
    return resolve(schema, node["items"]) if node.get("type") == "array" and "items" in node else node


def key_range(cls: type, spec_field: dataclasses.Field) -> Range | None:
    """The allowed range of a field of a spec section, from its JSON Schema (``None``: not numeric)."""
    return range_from_schema(_field_node(cls, spec_field.name))


def key_pattern(cls: type, spec_field: dataclasses.Field) -> Pattern | None:
    """The allowed form of a string field of a spec section (``None``: any string)."""
    node = _field_node(cls, spec_field.name)
    return Pattern(node["pattern"], node["form"]) if "form" in node else None


def load_spec(path: Path | str | None = None) -> AnalysisSpec:
    """Load and validate an analysis spec.

    Parameters
    ----------
    path : path, optional
        A YAML or JSON file (UTF-8). Missing keys take their defaults; ``None``
        gives the default spec.

    Raises
    ------
    SpecError
        On unreadable or non-UTF-8 files, unknown keys, invalid values, values
        out of range, or contrast expressions outside the grammar.
    """
    if path is None:
        return AnalysisSpec()
    path = Path(path)
    text = read_spec_text(path, "analysis spec")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        detail = _one_line(str(exc).replace(' in "<unicode string>",', " at"))
        raise SpecError(f"cannot parse analysis spec {path}: {detail}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"analysis spec {path} must be a mapping, got {type(data).__name__}")
    return spec_from_dict(data, source=str(path))


def read_spec_text(path: Path, what: str) -> str:
    """The UTF-8 text of a spec or model file of at most :data:`MAX_SPEC_BYTES`.

    Raises
    ------
    SpecError
        Naming ``what`` and the file: unreadable, too large, or not UTF-8.
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{what} {path} is larger than {MAX_SPEC_BYTES // 1_000_000} MB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{what} {path} is not UTF-8 text (invalid byte at offset {exc.start})") from exc


def spec_from_dict(data: dict[str, Any], source: str = "<spec>") -> AnalysisSpec:
    """Validate a nested dict against :class:`AnalysisSpec`.

    Deprecated keys (``events.on``, ``events.off``, ``pathways.on_trial_type``)
    are moved to the keys that replace them, with a logged warning; an alias
    that contradicts the new key is an error.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping, got {shown(data)}")
    checked = _check_keys(AnalysisSpec, _resolve_aliases(data, source), source, prefix="")
    try:
        spec = AnalysisSpec(**checked)
    except pydantic.ValidationError as exc:
        raise _spec_error(exc, source) from None
    _check_across_keys(spec, source)
    return spec


def _one_line(text: str, limit: int = 2 * MAX_ECHO) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve_aliases(data: dict[str, Any], source: str) -> dict[str, Any]:
    data = dict(data)
    for old_section, old_key, new_section, new_key in _ALIASES:
        old = data.get(old_section)
        if not isinstance(old, dict) or old_key not in old:
            continue
        new = data.get(new_section)
        if new is None:
            new = {}
        if not isinstance(new, dict):
            continue  # _build reports the section that is not a mapping
        old = dict(old)
        value = old.pop(old_key)
        data[old_section] = old
        new = dict(data.get(new_section) or {}) if new_section != old_section else old
        if not (value is None or isinstance(value, str)):
            raise SpecError(f"{source}: {old_section}.{old_key} must be a string, got {shown(value)}")
        if new_key in new and new[new_key] != value:
            raise SpecError(f"{source}: {old_section}.{old_key} = {shown(value)} (a deprecated alias of "
                            f"{new_section}.{new_key}) conflicts with {new_section}.{new_key} = "
                            f"{shown(new[new_key])}; keep only {new_section}.{new_key}")
        new[new_key] = value
        data[new_section] = new
        LOGGER.warning("%s: %s.%s is deprecated, write %s.%s instead", source, old_section, old_key,
                       new_section, new_key)
    return data


def _check_across_keys(spec: AnalysisSpec, source: str) -> None:
    """Rules that involve more than one key, or labels that end up in file names."""
    for key, value in (("task", spec.task), ("space", spec.space)):
        if value is not None and not LABEL_RE.fullmatch(value):
            raise SpecError(f"{source}: {key} = {shown(value)} must be letters and digits only (a BIDS label)")
    if not spec.conditions:
        raise SpecError(f"{source}: conditions must list at least one condition")
    for i, name in enumerate(spec.conditions):
        if not LABEL_RE.fullmatch(name):
            raise SpecError(f"{source}: conditions[{i}] = {shown(name)} must be letters and digits only")
    lowered = [c.lower() for c in spec.conditions]
    if len(set(lowered)) != len(lowered):
        raise SpecError(f"{source}: conditions {shown(spec.conditions)} repeat a name (case-insensitively)")
    events = spec.events
    if events.off_trial_type is not None and events.off_trial_type == events.on_trial_type:
        raise SpecError(f"{source}: events.off_trial_type equals events.on_trial_type "
                        f"({shown(events.on_trial_type)})")
    atlas = spec.pathways.atlas
    if spec.pathways.enabled and atlas is not None and not Path(atlas).is_file():
        raise SpecError(f"{source}: pathways.atlas = {shown(atlas)} is not a file")
    if spec.pathways.enabled and spec.pathways.ppi_seeds:
        nodes = _atlas_nodes(spec.pathways, source)
        unknown = [seed for seed in spec.pathways.ppi_seeds if seed not in nodes]
        if unknown:
            raise SpecError(f"{source}: pathways.ppi_seeds {shown(unknown)} are not nodes of the atlas "
                            f"{spec.pathways.atlas_file} ({_one_line(', '.join(nodes))})")
    check_equivalence(spec.equivalence, spec.conditions, source)
    check_between_subjects(spec.group.between_subjects, source)
    _check_between_subjects_names(spec, source)
    known = {c.lower() for c in spec.conditions}
    for i, name in enumerate(spec.responders.conditions):
        if name.lower() not in known:
            raise SpecError(f"{source}: responders.conditions[{i}] = {shown(name)} is not among the "
                            f"conditions {shown(spec.conditions)}")
    fl = spec.first_level
    if fl.hrf_model == "fir" and (not fl.fir_delays or len(set(fl.fir_delays)) != len(fl.fir_delays)):
        raise SpecError(f"{source}: first_level.fir_delays must list distinct delays (at least one) "
                        "with hrf_model: fir")
    reserved = {"stim", "periodLinear", *trial_contrasts(spec.conditions)}
    for name in spec.first_level.contrasts:
        if name in reserved:
            raise SpecError(f"{source}: first_level.contrasts.{name}: {name!r} is a built-in contrast "
                            f"name ({', '.join(sorted(reserved))}); choose another")


def _check_between_subjects_names(spec: AnalysisSpec, source: str) -> None:
    """Each ``group.between_subjects`` test names a subject-level contrast and writes maps no
    other group map is written as."""
    contrasts = trial_contrasts(spec.conditions)
    subject_level = ({"stim"} | {c.lower() for c in spec.conditions} | set(difference_contrasts(contrasts))
                     | set(spec.first_level.contrasts))
    slopes = {"".join(part.capitalize() for part in cov.replace("-", "_").split("_") if part)
              for cov in spec.group.covariates}
    # the one-sample maps of a condition with covariates include their slopes, <condition>By<Covariate>
    taken = (subject_level | set(contrasts) | {"conditionF", "periodLinear", "sequenceF"}
             | {f"{c.lower()}By{s}" for c in spec.conditions for s in slopes})
    for i, test in enumerate(spec.group.between_subjects):
        key = f"group.between_subjects[{i}]"
        if test.contrast is not None and test.contrast not in subject_level:
            raise SpecError(f"{source}: {key}.contrast = {shown(test.contrast)} is not a subject-level "
                            f"contrast ({', '.join(sorted(subject_level))})")
        labels = ([test.name] if test.contrast else
                  [c + test.name[0].upper() + test.name[1:] for c in subject_level])
        clash = sorted(set(labels) & taken)
        if clash:
            raise SpecError(f"{source}: {key}.name = {shown(test.name)} would write the maps of "
                            f"{clash[0]}, which another group model writes; choose another name")
        taken |= set(labels)


def _atlas_nodes(pathways: PathwaysSpec, source: str) -> list[str]:
    try:
        path = pathways.atlas_file
        with open(path, encoding="utf-8", newline="") as fh:
            return [row.get("name") or "" for row in csv.DictReader(fh, delimiter="\t")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SpecError(f"{source}: cannot read the pathway atlas to check pathways.ppi_seeds: {exc}") from exc


def _check_keys(cls: type, data: Any, source: str, prefix: str) -> dict[str, Any]:
    """``data`` with every key known to its section (a null section: its defaults), else a SpecError.

    Done before pydantic sees the data so that a key YAML read as a boolean gets its hint and
    an unknown key the list of the allowed ones.
    """
    section = prefix.rstrip(".") or "spec"
    if not isinstance(data, dict):
        raise SpecError(f"{source}: '{section}' must be a mapping, got {shown(data)}")
    booleans = [k for k in data if isinstance(k, bool)]
    if booleans:
        hint = " (write on_trial_type / off_trial_type)" if section == "events" else ""
        raise SpecError(f"{source}: key {booleans[0]} under '{section}' was read as a boolean: "
                        f"quote 'on' / 'off' / 'yes' / 'no' keys in YAML{hint}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        listed = _one_line(", ".join(prefix + str(k) for k in unknown))
        raise SpecError(f"{source}: unknown key(s) {listed}; allowed under '{section}': {', '.join(sorted(known))}")
    out = dict(data)
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            out[key] = _check_keys(tp, {} if value is None else value, source, f"{prefix}{key}.")
        elif (typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0])
              and isinstance(value, (list, tuple))):
            out[key] = [_check_keys(typing.get_args(tp)[0], item, source, f"{prefix}{key}[{i}].")
                        for i, item in enumerate(value)]
    return out


def _spec_error(exc: pydantic.ValidationError, source: str) -> SpecError:
    """pydantic's first error (by key) as one line naming the file, the key and the value."""
    errors = exc.errors(include_url=False)
    located = [(*_key_and_node(err["loc"]), err) for err in errors]
    key, node, err = located[0]
    same_key = [item for item in located if item[0] == key]
    if err["type"] == "literal_error" and len(same_key) > 1:  # a union: the non-literal member speaks
        key, node, err = same_key[1]
    more = len({item[0] for item in located}) - 1
    text = f"{source}: {_message(key, node, err)}"
    return SpecError(_one_line(text) + (f" (and {more} more key(s) in error)" if more else ""))


def _key_and_node(loc: tuple) -> tuple[str, dict[str, Any]]:
    """The spec key of a pydantic error location and its schema node (union member tags skipped)."""
    schema = constraint_schema(AnalysisSpec)
    node: dict[str, Any] = schema
    key = ""
    for part in loc:
        node = resolve(schema, node)
        members = [resolve(schema, m) for m in node.get("anyOf", [])] or [node]
        if isinstance(part, str) and part != "[key]":
            holder = next((m for m in members if part in m.get("properties", {})), None)
            if holder is not None:
                key, node = f"{key}.{part}" if key else part, holder["properties"][part]
                continue
            holder = next((m for m in members if isinstance(m.get("additionalProperties"), dict)), None)
            if holder is not None:
                key, node = f"{key}.{part}", holder["additionalProperties"]
            continue  # else a union member's tag, e.g. "literal['auto']"
        if isinstance(part, int):
            holder = next((m for m in members if "items" in m), None)
            if holder is not None:
                key, node = f"{key}[{part}]", holder["items"]
            else:  # a mapping key that is an integer
                key = f"{key}.{part}"
    node = resolve(schema, node)
    return key or "spec", node


def _message(key: str, node: dict[str, Any], err: dict[str, Any]) -> str:
    kind, value = err["type"], err.get("input")
    got = shown(value)
    if err["loc"] and err["loc"][-1] == "[key]":
        return f"{key.rsplit('.', 1)[0]} has a key {got} that is not a string"
    if kind == "float_type":
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{key} must be a finite number, got {got}"
        hint = (" (YAML reads 1e-3 as text: write 1.0e-3, with a dot and a signed exponent)"
                if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9.]+[eE][-+]?[0-9]+", value) else "")
        return f"{key} must be a number, got {got}{hint}"
    if kind == "finite_number":
        return f"{key} must be a finite number, got {got}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"{key} must be an integer, got {got}"
    if kind == "bool_type":
        return f"{key} must be true or false, got {got}"
    if kind == "string_type":
        return f"{key} must be a string, got {got}"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return f"{key} must be a list, got {got}"
    if kind in ("dict_type", "dataclass_type", "dataclass_args_type", "model_type"):
        return f"{key} must be a mapping, got {got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        allowed = range_from_schema(node)
        return f"{key} = {got} is out of range ({allowed.describe() if allowed else err['msg']})"
    if kind == "literal_error":
        options = [m.get("enum", [m.get("const")]) for m in node.get("anyOf", [node]) if "enum" in m or "const" in m]
        listed = ", ".join(str(v) for values in options for v in values if v is not None)
        return f"{key} = {got} is not one of {listed or err['ctx']['expected']}"
    if kind == "string_pattern_mismatch":
        return f"{key} = {got} is not {node.get('form', 'of the form ' + node.get('pattern', '?'))}"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "spec":
        return f"{key} {err['msg']}"
    if kind == "missing":
        return f"{key} is required"
    return f"{key} = {got}: {err['msg']}"


def defaults_yaml() -> str:
    """The default spec as commented YAML (the content of ``pipelines/trial.yaml``)."""
    header = (
        "# yaml-language-server: $schema=../docs/spec.schema.json\n"
        "# The trial's default analysis spec: every key with its default value.\n"
        "# A spec of your own lists only what it changes (see docs/spec.md for every key).\n"
        "# Pass it with `fmri-pain BIDS OUT participant --spec my.yaml`.\n"
    )
    return header + yaml.safe_dump(AnalysisSpec().to_dict(), sort_keys=False)


if __name__ == "__main__":
    print(defaults_yaml(), end="")
