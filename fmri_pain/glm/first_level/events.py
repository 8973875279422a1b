"""A run's events and the contrasts over its trial types (``stim`` and the spec's expressions).

The regressor of interest is the ON trial type (``events.on_trial_type``); every other
trial type in ``events.tsv`` is modelled as a nuisance regressor. Contrasts are
written as weights over *trial types* here; :func:`~fmri_pain.glm.first_level.design.contrast_vector`
expands them to design columns, so the same expression works for every HRF model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fmri_pain.bids.runs import Run
from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.config.events import EventsSpec
from fmri_pain.errors import InputError

STIM = "stim"
"""Name of the ON > OFF (or ON > baseline) contrast every run gets."""

BASELINE_TRIAL_TYPES = ("off", "rest", "baseline", "fixation")
"""Trial types read as baseline when the ON trial type is absent (one-condition studies)."""


def read_events(path: Path | str | None, subject: str | None = None,
                default_trial_type: str = "on") -> pd.DataFrame:
    """Read ``events.tsv`` into ``onset``, ``duration``, ``trial_type`` (+ ``modulation``).

    A file without ``trial_type`` is one condition, ``default_trial_type``
    (the ON trial type). Rows with a missing onset are dropped.

    Raises
    ------
    InputError
        Missing/unreadable file, missing ``onset``/``duration`` columns, or no events.
    """
    if path is None:
        raise InputError("run has no events.tsv", subject=subject)
    try:
        with warnings.catch_warnings():
            # index_col=False: a first row longer than the header is an error, not an index column
            warnings.simplefilter("error", pd.errors.ParserWarning)
            events = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True, index_col=False)
    except pd.errors.ParserWarning as exc:
        raise InputError("cannot read events file: line 2 has more fields than the header",
                         subject=subject, path=path) from exc
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read events file: {' '.join(str(exc).split())}",
                         subject=subject, path=path) from exc
    missing = {"onset", "duration"} - set(events.columns)
    if missing:
        raise InputError(f"events file lacks column(s) {sorted(missing)}", subject=subject, path=path)
    if "trial_type" not in events.columns:
        events["trial_type"] = default_trial_type
    events = events.dropna(subset=["onset"])
    events["trial_type"] = events["trial_type"].fillna("n/a").astype(str)
    events["duration"] = pd.to_numeric(events["duration"], errors="coerce").fillna(0.0)
    try:
        events["onset"] = events["onset"].astype(float)
    except ValueError as exc:
        raise InputError(f"non-numeric onset: {exc}", subject=subject, path=path) from exc
    if events.empty:
        raise InputError("events file has no events", subject=subject, path=path)
    cols = ["onset", "duration", "trial_type"] + (["modulation"] if "modulation" in events else [])
    return events[cols].reset_index(drop=True)


def stim_weights(trial_types: list[str], events_spec: EventsSpec) -> dict[str, float]:
    """Weights over trial types of the ``stim`` contrast (ON > OFF or ON > baseline).

    If ``events_spec.on_trial_type`` is a trial type: ON (minus OFF when
    ``off_trial_type`` is set and present). Otherwise (a one-condition study
    with other event names) the mean of the non-baseline trial types, minus
    the mean of baseline-like trial types (``off``/``rest``/``baseline``/
    ``fixation`` or ``events_spec.off_trial_type``) if any.
    """
    types = list(dict.fromkeys(trial_types))
    on, off = events_spec.on_trial_type, events_spec.off_trial_type
    if on in types:
        weights = {on: 1.0}
        if off is not None and off in types:
            weights[off] = -1.0
        return weights
    baseline_names = {b.lower() for b in BASELINE_TRIAL_TYPES} | ({off.lower()} if off else set())
    active = [t for t in types if t.lower() not in baseline_names]
    rest = [t for t in types if t.lower() in baseline_names]
    if not active:
        raise ValueError(f"no active trial type among {types}")
    weights = {t: 1.0 / len(active) for t in active}
    weights.update({t: -1.0 / len(rest) for t in rest})
    return weights


def expression_weights(expression: str, trial_types: list[str]) -> dict[str, float]:
    """Weights over trial types of a contrast expression, e.g. ``"F1 + F2 - N1 - N2"``.

    The expression is parsed by :func:`fmri_pain.config.contrast_expressions.parse_contrast`
    (trial-type names, numbers, ``+ - * /``, parentheses; linear), never
    evaluated; the result equals nilearn's ``expression_to_contrast_vector``
    on the same trial types.

    Raises
    ------
    ContrastExpressionError
        If the expression is outside the grammar or not linear (a ``ValueError``).
    ValueError
        If the expression names a trial type the run does not have.
    """
    weights = parse_contrast(expression)
    types = list(dict.fromkeys(trial_types))
    missing = [name for name in weights if name not in types]
    if missing:
        found = ", ".join(types[:10]) + (f" +{len(types) - 10} more" if len(types) > 10 else "")
        raise ValueError(f"trial type(s) {', '.join(map(repr, missing))} not among the run's "
                         f"trial types ({found})")
    return {t: weights[t] for t in types if weights.get(t, 0.0) != 0}


def contrast_weights(trial_types: list[str], events_spec: EventsSpec, contrasts: Mapping[str, str],
                     run: Run) -> dict[str, dict[str, float]]:
    """Weights over trial types of a run's contrasts: ``stim`` and each spec contrast.

    Parameters
    ----------
    trial_types : list of str
        The run's trial types.
    events_spec : EventsSpec
    contrasts : mapping of str -> str
        ``first_level.contrasts``: name -> expression.
    run : Run
        Named in errors.

    Returns
    -------
    dict
        Contrast name -> weights over trial types.

    Raises
    ------
    InputError
        No active trial type for ``stim``, or an expression naming a trial type the run lacks.
    """
    weights: dict[str, dict[str, float]] = {}
    try:
        weights[STIM] = stim_weights(trial_types, events_spec)
    except ValueError as exc:
        raise InputError(f"no stim contrast: {exc}", subject=run.subject, path=run.events) from exc
    for name, expression in contrasts.items():
        try:
            weights[name] = expression_weights(expression, trial_types)
        except ValueError as exc:
            raise InputError(f"contrast {name!r} of the spec: {exc}", subject=run.subject,
                             path=run.events) from exc
    return weights
