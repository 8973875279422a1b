"""BIDS Stats Models (BSM) in: a ``*_smdl.json`` file validated with bsmschema and translated to the spec.

FitLins users describe their models in BSM JSON. :func:`load_bsm` validates such a file with
the ``bsmschema`` package (the pydantic schema of the BSM specification) and translates it into
the nested dict of an analysis spec, which :func:`fmri_pain.config.spec.spec_from_dict` then
validates like any spec. The translation covers what the spec can express:

- ``Input.task`` -> ``task``;
- the **Run** node: trial-type regressors of ``Model.X`` (``trial_type.NAME`` or plain names),
  the HRF (``Transformations`` ``Convolve`` or ``Model.HRF``) -> ``first_level.hrf_model``,
  fMRIPrep motion columns (the 6 parameters, or their 24-term expansion) ->
  ``first_level.confounds.strategy`` (``motion6`` / ``motion24``, no censoring),
  ``Model.Options.HighPassFilterCutoffHz`` -> a cosine drift with that cut-off (none without it),
  t contrasts -> ``first_level.contrasts`` (names camel-cased into BIDS labels, as FitLins
  does; weights written as an expression the spec parses);
- **Session** / **Subject** nodes with ``X: [1]`` and ``Type: meta`` -> the spec's fixed effects
  over runs;
- the **Dataset** node: ``X`` of the intercept, numeric columns of ``participants.tsv``
  (``group.covariates``, mean-centred by the spec, so the intercept is the effect at the mean
  covariate; a warning says so) and indicators ``column.LEVEL`` of one two-level column (two
  cell means, or one beside the intercept). Its t contrasts: the intercept (the one-sample test
  of every contrast), a covariate's slope (``ConditionList [age]``, weight 1) and a group
  difference (``[group.A, group.B]``, weights ``[1, -1]``, or ``[group.A]`` beside the intercept)
  -> ``group.between_subjects`` entries applied to every subject-level contrast (``contrast:
  null``), adjusted for the other covariates of X.
- ``Model.Software["fmri-pain"]`` of any node: spec keys BSM has no field for (smoothing, noise
  model, censoring, the crossover's group options, ...), merged in; they may refine a derived
  value only where the spec is more specific (``strategy: auto`` or ``acompcor`` over the 24
  motion columns, a ``polynomial`` drift where BSM has no high-pass).

Everything else (a Formula, F tests, more than one group column, edge filters,
subject selection in ``Input``, unknown transformations, ...) is a :class:`SpecError` naming the
file and the node and field; nothing is dropped. The spec models every trial type of a run's
``events.tsv``: trial types a run has beyond those of ``Model.X`` become nuisance regressors
(a logged warning says so). Nothing from the file is evaluated.
"""

from __future__ import annotations

import json
import logging
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from fmri_pain.config.fields import HRF_MODELS, LABEL_RE, SpecError, shown
from fmri_pain.config.spec import AnalysisSpec, read_spec_text, spec_from_dict
from fmri_pain.confound_names import MOTION

LOGGER = logging.getLogger(__name__)

SOFTWARE = "fmri-pain"
"""Key of ``Model.Software`` that holds spec keys BSM has no field for."""

MOTION24: tuple[str, ...] = tuple(f"{m}{s}" for m in MOTION
                                  for s in ("", "_derivative1", "_power2", "_derivative1_power2"))
"""fMRIPrep's 24-term motion expansion (what nilearn's ``motion="full"`` loads)."""

_CONFOUND_RE = re.compile(r"(trans|rot)_[xyz].*|a_comp_cor_.*|t_comp_cor_.*|c_comp_cor_.*|w_comp_cor_.*"
                          r"|cosine.*|motion_outlier.*|non_steady_state.*|framewise_displacement|dvars"
                          r"|std_dvars|rmsd|csf.*|white_matter.*|global_signal.*|aroma_.*|tcompcor")
"""Columns of fMRIPrep's confounds TSV (anything else in ``Model.X`` is a trial type)."""

_REFINEMENTS: dict[tuple[str, ...], dict[Any, set]] = {
    ("first_level", "confounds", "strategy"): {"motion24": {"auto", "acompcor"}},
    ("first_level", "drift_model"): {"none": {"polynomial"}},
    ("first_level", "confounds", "scrub"): {False: {True}},
}
"""Derived value -> the more specific values ``Software["fmri-pain"]`` may set instead."""


def is_bsm(data: Any) -> bool:
    """Whether parsed JSON/YAML looks like a BIDS Stats Model (a mapping with ``Nodes``)."""
    return isinstance(data, dict) and "Nodes" in data


def read_bsm_json(path: Path | str) -> Any:
    """The parsed JSON of ``path`` (size-limited), or a :class:`SpecError` naming the file."""
    path = Path(path)
    text = read_spec_text(path, "BIDS Stats Model")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"cannot parse BIDS Stats Model {path}: {' '.join(str(exc).split())[:200]}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def validate_bsm(data: Any, source: str = "<model>") -> Any:
    """Validate parsed JSON with bsmschema; the ``BIDSStatsModel`` object.

    Raises
    ------
    SpecError
        One line naming ``source``, the first failing field and how many more fail.
    """
    import pydantic
    from bsmschema.models import BIDSStatsModel

    if not isinstance(data, dict):
        raise SpecError(f"{source}: not a BIDS Stats Model (a JSON object), got {shown(data)}")
    try:
        return BIDSStatsModel.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = _location(data, first["loc"])
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(f"{source}: not a valid BIDS Stats Model (bsmschema): {where}: "
                        f"{first['msg']}{more}") from None


def _location(data: Any, loc: tuple) -> str:
    """``Nodes[run].Model.Type`` for pydantic's ``('Nodes', 0, 'Model', 'Type')``."""
    parts, node = [], data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("Name") if isinstance(node, list) and item < len(node) and isinstance(
                node[item], dict) else None
            parts[-1] += f"[{name}]" if isinstance(name, str) else f"[{item}]"
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def load_bsm(path: Path | str) -> AnalysisSpec:
    """Read, validate and translate a BIDS Stats Model file into an :class:`AnalysisSpec`.

    Raises
    ------
    SpecError
        Unreadable or invalid file (bsmschema), or a part the spec cannot express, naming the
        file and the node and field.
    """
    source = str(path)
    model = validate_bsm(read_bsm_json(path), source)
    return spec_from_dict(bsm_to_dict(model, source), source=source)


def load_analysis(spec_path: Path | str | None = None,
                  model_path: Path | str | None = None) -> tuple[AnalysisSpec, str | None]:
    """The spec of a run: from a BSM file (``model_path``, or a JSON ``spec_path`` with ``Nodes``) or a spec.

    Returns
    -------
    spec : AnalysisSpec
    name : str or None
        The BIDS Stats Model's ``Name`` when the spec came from one.

    Raises
    ------
    SpecError
        Both paths given, or any error of :func:`load_bsm` / :func:`~fmri_pain.config.spec.load_spec`.
    """
    from fmri_pain.config.spec import load_spec

    if spec_path is not None and model_path is not None:
        raise SpecError(f"give a BIDS Stats Model ({model_path}) or an analysis spec ({spec_path}), not both")
    if model_path is None and spec_path is not None and Path(spec_path).suffix.lower() == ".json":
        try:
            data = json.loads(read_spec_text(Path(spec_path), "analysis spec"))
        except (ValueError, RecursionError):  # SpecError included
            data = None  # load_spec reports what is wrong with it
        if is_bsm(data):
            model_path = spec_path
    if model_path is None:
        return load_spec(spec_path), None
    source = str(model_path)
    model = validate_bsm(read_bsm_json(model_path), source)
    return spec_from_dict(bsm_to_dict(model, source), source=source), model.Name


def model_label(name: str) -> str:
    """A BIDS label (letters and digits, camel-cased) made of a model or contrast name."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    label = "".join(w if i == 0 else w[0].upper() + w[1:] for i, w in enumerate(words))
    return label


def bsm_to_dict(model: Any, source: str = "<model>") -> dict[str, Any]:
    """The nested spec dict of a validated ``bsmschema.models.BIDSStatsModel``.

    Parameters
    ----------
    model : bsmschema.models.BIDSStatsModel
    source : str
        The file, for error messages.

    Raises
    ------
    SpecError
        For anything the spec cannot express (naming ``source``, the node and the field).
    """
    out: dict[str, Any] = {}
    _translate_input(model.Input, source, out)
    nodes = _chain(model, source)
    software: list[tuple[str, dict]] = []
    for node in nodes:
        where = f"{source}: Nodes[{node.Name}]"
        if node.Level == "Run":
            _translate_run(node, where, out)
        elif node.Level in ("Session", "Subject"):
            _translate_fixed_effects(node, where)
        else:
            _translate_dataset(node, where, out)
        soft = node.Model.Software or {}
        for name in soft:
            if name != SOFTWARE:
                LOGGER.warning("%s.Model.Software.%s: settings for other software, not used by fmri-pain",
                               where, name)
        if SOFTWARE in soft:
            software.append((f"{where}.Model.Software.{SOFTWARE}", soft[SOFTWARE]))
    for where, values in software:
        _merge(out, values, where, ())
    return out


def _translate_input(selection: dict | None, source: str, out: dict) -> None:
    for key, value in (selection or {}).items():
        if key.lower() != "task":
            hint = {"subject": "--participant-label", "session": "--session-label"}.get(key.lower())
            raise SpecError(f"{source}: Input.{key}: the spec selects no {key}s"
                            + (f"; give {hint} on the command line" if hint else "")
                            + " (only Input.task is translated)")
        tasks = value if isinstance(value, list) else [value]
        if len(tasks) != 1 or not isinstance(tasks[0], str):
            raise SpecError(f"{source}: Input.task = {shown(value)}: the spec analyses one task")
        out["task"] = tasks[0]


def _chain(model: Any, source: str) -> list[Any]:
    """The nodes in order Run -> [Session] -> [Subject] -> Dataset (one path, no filters)."""
    nodes = list(model.Nodes)
    names = [n.Name for n in nodes]
    if len(set(names)) != len(names):
        raise SpecError(f"{source}: Nodes: node names repeat ({shown(names)})")
    if model.Edges:
        for i, edge in enumerate(model.Edges):
            if edge.Filter:
                raise SpecError(f"{source}: Edges[{i}].Filter: every contrast goes on to the next "
                                "level in the spec; filters are not translated")
        by_name = {n.Name: n for n in nodes}
        succ: dict[str, str] = {}
        for i, edge in enumerate(model.Edges):
            for end in (edge.Source, edge.Destination):
                if end not in by_name:
                    raise SpecError(f"{source}: Edges[{i}]: no node named {shown(end)}")
            if edge.Source in succ:
                raise SpecError(f"{source}: Edges[{i}]: node {shown(edge.Source)} branches; the spec "
                                "has one path from the run to the dataset level")
            succ[edge.Source] = edge.Destination
        roots = [n for n in names if n not in set(succ.values())]
        if len(roots) != 1:
            raise SpecError(f"{source}: Edges: the nodes do not form one path (roots {shown(roots)})")
        ordered, current = [], roots[0]
        while current is not None and current not in ordered:
            ordered.append(current)
            current = succ.get(current)
        if len(ordered) != len(nodes):
            raise SpecError(f"{source}: Edges: the nodes do not form one path through all of them")
        nodes = [by_name[n] for n in ordered]
    levels = [n.Level for n in nodes]
    order = ["Run", "Session", "Subject", "Dataset"]
    if (levels[:1] != ["Run"] or levels[-1:] != ["Dataset"] or len(set(levels)) != len(levels)
            or levels != sorted(levels, key=order.index)):
        raise SpecError(f"{source}: Nodes: levels {shown(levels)}; the spec's path is Run, "
                        "optional Session and Subject, then one Dataset node")
    return nodes


def _no_extras(node: Any, where: str, allow_contrasts: bool) -> None:
    model = node.Model
    if model.Formula is not None:
        raise SpecError(f"{where}.Model.Formula: formulas are not translated; list the columns in X")
    if not allow_contrasts and node.Contrasts:
        raise SpecError(f"{where}.Contrasts: contrasts at the {node.Level} level are not "
                        "expressible in the spec (it passes every lower-level contrast on)")


def _translate_fixed_effects(node: Any, where: str) -> None:
    _no_extras(node, where, allow_contrasts=False)
    if node.Transformations is not None:
        raise SpecError(f"{where}.Transformations: none are translated at the {node.Level} level")
    if node.Model.X != [1] or node.Model.Type != "meta":
        raise SpecError(f"{where}.Model: the spec combines runs by fixed effects (Type meta, X [1]); "
                        f"got Type {node.Model.Type}, X {shown(node.Model.X)}")
    _check_options(node, where, allowed=())
    _check_dummy(node, where, allowed_tests=("t", "pass"))
    extra = set(node.GroupBy) - {"subject", "session", "contrast"}
    if extra or not {"subject", "contrast"} <= set(node.GroupBy):
        raise SpecError(f"{where}.GroupBy = {shown(node.GroupBy)}: the spec combines per subject "
                        "(and session) and contrast")


def _check_dummy(node: Any, where: str, allowed_tests: tuple[str, ...]) -> None:
    dummy = node.DummyContrasts
    if dummy is None:
        return
    if dummy.Test not in allowed_tests:
        raise SpecError(f"{where}.DummyContrasts.Test = {dummy.Test!r}: only {' or '.join(allowed_tests)} "
                        f"at the {node.Level} level")
    if dummy.Contrasts not in (None, [1]):
        raise SpecError(f"{where}.DummyContrasts.Contrasts = {shown(dummy.Contrasts)}: only the intercept "
                        f"(1) at the {node.Level} level")


def _check_options(node: Any, where: str, allowed: tuple[str, ...]) -> None:
    options = node.Model.Options
    if options is None:
        return
    for key, value in options.model_dump(exclude_none=True).items():
        if key not in allowed and key != "Description":
            raise SpecError(f"{where}.Model.Options.{key}: not expressible in the spec")


def _classify(x: list, where: str) -> tuple[list[str], list[str], bool]:
    """Trial types (without ``trial_type.``), confound columns, and whether the intercept is in X."""
    trial_types, confounds, intercept = [], [], False
    for item in x:
        if item == 1:
            intercept = True
        elif item.startswith("trial_type."):
            trial_types.append(item[len("trial_type."):])
        elif _CONFOUND_RE.fullmatch(item):
            confounds.append(item)
        elif "*" in item or "?" in item:
            raise SpecError(f"{where}.Model.X: {item!r}: wildcards match nothing the spec names")
        else:
            trial_types.append(item)
    for name in trial_types:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SpecError(f"{where}.Model.X: trial type {name!r} cannot be named in a contrast "
                            "expression (letters, digits and _ only)")
    return trial_types, confounds, intercept


def _confound_strategy(confounds: list[str], where: str) -> str:
    found = set(confounds)
    for strategy, columns in (("none", ()), ("motion6", MOTION), ("motion24", MOTION24)):
        if found == set(columns):
            return strategy
    odd = sorted(found - set(MOTION24)) or sorted(set(MOTION24) - found)
    raise SpecError(f"{where}.Model.X: confounds {shown(odd)}: the spec's nuisance models are none, the "
                    "6 motion parameters or their 24-term expansion (aCompCor and censoring: set "
                    f"first_level.confounds in Model.Software.{SOFTWARE})")


def _hrf_name(model: str, derivative: Any, dispersion: Any, where: str) -> str:
    name = model
    if derivative is True:
        name += " + derivative"
    if dispersion is True:
        name += " + dispersion"  # without a derivative: no such nilearn basis, refused below
    if name not in HRF_MODELS or (derivative not in (None, False, True)) or (dispersion not in (None, False, True)):
        raise SpecError(f"{where}: HRF model {shown(name)} is not one of {', '.join(HRF_MODELS)}")
    return name


def _translate_run(node: Any, where: str, out: dict) -> None:
    _no_extras(node, where, allow_contrasts=True)
    model = node.Model
    if model.Type != "glm":
        raise SpecError(f"{where}.Model.Type = {model.Type!r}: the run model is a GLM")
    if not {"run", "subject"} <= set(node.GroupBy) or set(node.GroupBy) - {"run", "subject", "session"}:
        raise SpecError(f"{where}.GroupBy = {shown(node.GroupBy)}: the spec fits one GLM per run "
                        "(run, subject)")
    trial_types, confounds, intercept = _classify(model.X, where)
    if not trial_types:
        raise SpecError(f"{where}.Model.X has no trial type")
    if not intercept:
        raise SpecError(f"{where}.Model.X lacks the intercept 1: the spec's run GLM always has one")
    first: dict[str, Any] = {"confounds": {"strategy": _confound_strategy(confounds, where), "scrub": False}}
    hrf = _run_hrf(node, trial_types, where)
    first["hrf_model"] = hrf["model"]
    if "fir_delays" in hrf:
        first["fir_delays"] = hrf["fir_delays"]
    _check_options(node, where, allowed=("HighPassFilterCutoffHz",))
    cutoff = model.Options.HighPassFilterCutoffHz if model.Options else None
    first["drift_model"] = "none" if cutoff is None else "cosine"
    if cutoff is not None:
        first["high_pass"] = cutoff
    contrasts: dict[str, str] = {}
    for i, contrast in enumerate(node.Contrasts or []):
        cwhere = f"{where}.Contrasts[{contrast.Name}]"
        if contrast.Test not in ("t", "pass"):
            raise SpecError(f"{cwhere}.Test = {contrast.Test!r}: the spec's run-level contrasts are t contrasts")
        weights = _weights(contrast, trial_types, cwhere)
        if contrast.Name == "stim":
            continue  # the built-in ON > OFF contrast, checked against the events below
        _add_contrast(contrasts, model_label(contrast.Name), weights, cwhere)
    dummy = node.DummyContrasts
    if dummy is not None:
        if dummy.Test not in ("t", "pass"):
            raise SpecError(f"{where}.DummyContrasts.Test = {dummy.Test!r}: the spec's run-level "
                            "contrasts are t contrasts")
        listed = dummy.Contrasts
        if listed is None:
            LOGGER.warning("%s.DummyContrasts: maps of the trial types are written; the intercept and "
                           "confound columns get none", where)
            listed = [t if f"trial_type.{t}" not in model.X else f"trial_type.{t}" for t in trial_types]
        for item in listed:
            types, others, _ = _classify([item], where) if item != 1 else ([], [1], True)
            if others or not types or types[0] not in trial_types:
                raise SpecError(f"{where}.DummyContrasts.Contrasts: {item!r}: only trial types of X "
                                "get maps in the spec")
            _add_contrast(contrasts, model_label(item), {types[0]: 1.0}, f"{where}.DummyContrasts")
    if len(trial_types) == 1:
        out["events"] = {"on_trial_type": trial_types[0]}
    stim = [c for c in node.Contrasts or [] if c.Name == "stim"]
    if stim:
        out.setdefault("events", {})
        on, off = _stim_trial_types(_weights(stim[0], trial_types, f"{where}.Contrasts[stim]"),
                                    f"{where}.Contrasts[stim]")
        _merge(out, {"events": {"on_trial_type": on, "off_trial_type": off}}, f"{where}.Contrasts[stim]", ())
    first["contrasts"] = contrasts
    out["first_level"] = first
    LOGGER.warning("%s: fmri-pain models every trial type of a run's events.tsv; trial types beyond "
                   "%s become nuisance regressors", where, ", ".join(trial_types))


def _stim_trial_types(weights: dict[str, float], where: str) -> tuple[str, str | None]:
    on = [t for t, w in weights.items() if w == 1]
    off = [t for t, w in weights.items() if w == -1]
    if len(on) != 1 or len(off) > 1 or len(on) + len(off) != len(weights):
        raise SpecError(f"{where}: 'stim' is the built-in ON > OFF contrast: weights 1 on the ON "
                        "trial type (and -1 on an OFF trial type)")
    return on[0], (off[0] if off else None)


def _add_contrast(contrasts: dict[str, str], name: str, weights: dict[str, float], where: str) -> None:
    if not name or not LABEL_RE.fullmatch(name):
        raise SpecError(f"{where}: contrast name {name!r} has no letters or digits")
    if name in contrasts:
        raise SpecError(f"{where}: contrast name {name!r} is used twice (after camel-casing)")
    contrasts[name] = expression_of(weights)


def expression_of(weights: dict[str, float]) -> str:
    """A contrast expression the spec parses to ``weights``, e.g. ``on - 0.5 * off``.

    Weights of 1 are written bare and every weight as the shortest decimal that reads back
    exactly (``repr``), so :func:`~fmri_pain.config.contrast_expressions.parse_contrast`
    returns the same floats.
    """
    parts = []
    for name, w in weights.items():
        if w == 0:
            continue
        sign = "-" if w < 0 else "+"
        size = abs(w)
        term = name if size == 1 else f"{size!r} * {name}"
        parts.append((sign, term))
    if not parts:
        raise SpecError("a contrast with no non-zero weight")
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    return text + "".join(f" {sign} {term}" for sign, term in parts[1:])


def _weights(contrast: Any, trial_types: list[str], where: str) -> dict[str, float]:
    conditions = contrast.ConditionList
    weights = contrast.Weights
    if weights and isinstance(weights[0], list):
        if len(weights) != 1:
            raise SpecError(f"{where}.Weights: a t contrast has one row of weights")
        weights = weights[0]
    if len(weights) != len(conditions):
        raise SpecError(f"{where}.Weights: {len(weights)} weights for {len(conditions)} conditions")
    out: dict[str, float] = {}
    for item, weight in zip(conditions, weights):
        types, _, _ = _classify([item], where) if item != 1 else ([], [], True)
        if not types or types[0] not in trial_types:
            raise SpecError(f"{where}.ConditionList: {item!r}: the spec's contrasts weigh trial types "
                            "of X only")
        out[types[0]] = out.get(types[0], 0.0) + _number(weight, f"{where}.Weights")
    return out


def _number(weight: Any, where: str) -> float:
    if isinstance(weight, str):
        try:
            value = float(Fraction(weight.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise SpecError(f"{where}: {weight!r} is not a number or a fraction such as '1/3'") from None
    else:
        value = float(weight)
    if not math.isfinite(value):
        raise SpecError(f"{where}: {weight!r} is not finite")
    return value


def _run_hrf(node: Any, trial_types: list[str], where: str) -> dict[str, Any]:
    found: list[tuple[str, dict[str, Any]]] = []
    if node.Transformations is not None:
        for i, step in enumerate(node.Transformations.Instructions):
            swhere = f"{where}.Transformations.Instructions[{i}]"
            if not isinstance(step, dict):
                raise SpecError(f"{swhere}: an instruction is an object, got {shown(step)}")
            name = step.get("Name")
            if name == "Factor":
                if step.get("Input") not in (["trial_type"], "trial_type") or set(step) - {"Name", "Input",
                                                                                         "Description"}:
                    raise SpecError(f"{swhere}: only Factor of trial_type is translated")
            elif name == "Convolve":
                extra = set(step) - {"Name", "Input", "Model", "Derivative", "Dispersion", "Description"}
                if extra:
                    raise SpecError(f"{swhere}: Convolve option(s) {sorted(extra)} are not translated")
                inputs = step.get("Input")
                inputs = [inputs] if isinstance(inputs, str) else inputs
                found.append((f"{swhere}.Input", {"inputs": inputs, "model": _hrf_name(
                    str(step.get("Model", "spm")), step.get("Derivative"), step.get("Dispersion"), swhere)}))
                if found[-1][1]["model"] == "fir":
                    raise SpecError(f"{swhere}: an FIR basis is given in Model.HRF (Parameters.fir_delays)")
            else:
                raise SpecError(f"{swhere}: transformation {shown(name)} is not translated "
                                "(only Factor of trial_type and Convolve)")
    hrf = node.Model.HRF
    if hrf is not None:
        spec = {"inputs": hrf.Variables, "model": _hrf_name(hrf.Model, None, None, f"{where}.Model.HRF")}
        params = dict(hrf.Parameters or {})
        if spec["model"] == "fir":
            delays = params.pop("fir_delays", None)
            if not isinstance(delays, list) or not delays:
                raise SpecError(f"{where}.Model.HRF.Parameters.fir_delays: an FIR basis needs its delays")
            spec["fir_delays"] = delays
        if params:
            raise SpecError(f"{where}.Model.HRF.Parameters: {sorted(params)} are not translated")
        found.append((f"{where}.Model.HRF.Variables", spec))
    if not found:
        raise SpecError(f"{where}: no HRF (a Convolve transformation or Model.HRF); the spec convolves "
                        "every trial type with one")
    kinds = {(s["model"], tuple(s.get("fir_delays", ()))) for _, s in found}
    if len(kinds) > 1:
        raise SpecError(f"{where}: the Convolve transformations and Model.HRF name different HRF models")
    for field_where, spec in found:
        names = [i[len("trial_type."):] if isinstance(i, str) and i.startswith("trial_type.") else i
                 for i in spec["inputs"] or []]
        if sorted(names) != sorted(trial_types):
            raise SpecError(f"{field_where} = {shown(spec['inputs'])}: the spec convolves every trial "
                            f"type of X ({', '.join(trial_types)}) with one HRF")
    return found[0][1]


def _translate_dataset(node: Any, where: str, out: dict) -> None:
    _no_extras(node, where, allow_contrasts=True)
    model = node.Model
    if node.Transformations is not None:
        raise SpecError(f"{where}.Transformations: not translated at the dataset level (list the "
                        "participants.tsv columns in X: col.LEVEL indicators, numeric columns)")
    if model.Type != "glm":
        raise SpecError(f"{where}.Model.Type = {model.Type!r}: the dataset model is a GLM")
    if set(node.GroupBy) != {"contrast"}:
        raise SpecError(f"{where}.GroupBy = {shown(node.GroupBy)}: the spec fits one model per contrast")
    _check_options(node, where, allowed=())
    intercept = 1 in model.X
    covariates = [x for x in model.X if x != 1 and "." not in x]
    cells = [x for x in model.X if x != 1 and "." in x]
    _check_cells(cells, intercept, f"{where}.Model.X")
    _check_dummy(node, where, allowed_tests=("t",))
    if node.DummyContrasts is not None:
        if node.DummyContrasts.Contrasts is None and (covariates or cells):
            raise SpecError(f"{where}.DummyContrasts: would test every column of X "
                            f"{shown(model.X)}; list the tests in Contrasts (the intercept, a "
                            "covariate's slope, a group difference) and DummyContrasts.Contrasts: [1]")
        if not intercept:
            raise SpecError(f"{where}.DummyContrasts: tests the intercept, which X lacks")
    tests, one_sample = [], node.DummyContrasts is not None
    for contrast in node.Contrasts or []:
        test = _dataset_test(contrast, intercept, covariates, cells, f"{where}.Contrasts[{contrast.Name}]")
        if test is None:
            one_sample = True
        else:
            tests.append(test)
    if not one_sample and not tests:
        raise SpecError(f"{where}: no contrast (DummyContrasts or Contrasts) to test")
    if not one_sample:
        LOGGER.warning("%s: the intercept is not tested, but fmri-pain writes the one-sample maps of "
                       "every contrast as well", where)
    if covariates:
        LOGGER.warning("%s.Model.X: covariates %s are mean-centred by fmri-pain (the intercept is the "
                       "effect at their mean)", where, ", ".join(covariates))
    group = {**({"covariates": covariates} if covariates else {}),
             **({"between_subjects": tests} if tests else {})}
    if group:
        out["group"] = group


def _check_cells(cells: list[str], intercept: bool, where: str) -> None:
    """Indicators ``column.LEVEL`` of X: two cells of one column, or one beside the intercept."""
    columns = {c.split(".", 1)[0] for c in cells}
    if len(columns) > 1:
        raise SpecError(f"{where}: indicators of {len(columns)} columns ({', '.join(sorted(columns))}); "
                        "the spec compares two groups of one column")
    if intercept and len(cells) > 1:
        raise SpecError(f"{where} = {shown(cells)}: beside the intercept, one indicator (column.A: A "
                        "minus the column's other level)")
    if not intercept and len(cells) != 2:
        raise SpecError(f"{where}: without the intercept, X needs the two cell-means indicators of a "
                        "two-group design (column.A, column.B)")
    for cell in cells:
        column, level = cell.split(".", 1)
        if not column or not level:
            raise SpecError(f"{where}: {cell!r} is not column.LEVEL")


def _dataset_test(contrast: Any, intercept: bool, covariates: list[str], cells: list[str],
                  where: str) -> dict[str, Any] | None:
    """A ``group.between_subjects`` entry of one dataset contrast (None: the intercept's test)."""
    weights = contrast.Weights
    if weights and isinstance(weights[0], list):
        weights = weights[0] if len(weights) == 1 else None
    if contrast.Test != "t" or weights is None or len(weights) != len(contrast.ConditionList):
        raise SpecError(f"{where}: only t tests with one weight per condition are expressible")
    terms = {c: _number(w, f"{where}.Weights") for c, w in zip(contrast.ConditionList, weights)}
    terms = {c: w for c, w in terms.items() if w != 0}
    name = model_label(contrast.Name)
    if not name:
        raise SpecError(f"{where}: contrast name {contrast.Name!r} has no letters or digits")
    if terms == {1: 1.0} and intercept:
        return None
    if len(terms) == 1 and next(iter(terms)) in covariates and next(iter(terms.values())) == 1:
        return {"name": name, "design": "covariate", "column": next(iter(terms))}
    if len(cells) == 2 and set(terms) == set(cells) and sorted(terms.values()) == [-1.0, 1.0]:
        first, second = sorted(terms, key=lambda c: -terms[c])
        return {"name": name, "design": "two-group", "column": first.split(".", 1)[0],
                "levels": [first.split(".", 1)[1], second.split(".", 1)[1]]}
    if intercept and cells and terms == {cells[0]: 1.0}:
        return {"name": name, "design": "two-group", "column": cells[0].split(".", 1)[0],
                "levels": [cells[0].split(".", 1)[1]]}
    raise SpecError(f"{where}: not expressible; the dataset level tests the intercept ([1], weight 1), a "
                    "covariate's slope ([column], weight 1) or a group difference ([column.A, column.B], "
                    "weights [1, -1]; or [column.A], weight 1, beside the intercept)")


def _merge(out: dict, values: Any, where: str, path: tuple[str, ...]) -> None:
    if not isinstance(values, dict):
        raise SpecError(f"{where}: spec keys are given as an object, got {shown(values)}")
    for key, value in values.items():
        here = (*path, key)
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            _merge(out[key], value, where, here)
        elif key in out and out[key] != value:
            allowed = _REFINEMENTS.get(here, {}).get(out[key], set())
            if value not in allowed:
                raise SpecError(f"{where}.{'.'.join(here)} = {shown(value)} contradicts "
                                f"{shown(out[key])} from the model's own fields")
            out[key] = value
        else:
            out[key] = value
