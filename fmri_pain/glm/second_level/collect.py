"""Find and check the participant level's subject maps before any group model is fitted.

One table of subject maps with their design information (condition, period, covariates);
checks that they are the current spec's contrasts, were made with one set of first-level
parameters (fingerprints) and lie in one space on one grid.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import sidecar_path
from fmri_pain.bids.runs import Run
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.errors import InputError
from fmri_pain.glm.second_level.outputs import section_record
from fmri_pain.trial import difference_contrasts, trial_contrasts

Warn = Callable[[str], None]
"""Receives a decision that changes the analysis (logged and kept for the report)."""

_SUBJECT_MAP = re.compile(
    r"^sub-(?P<subject>[a-zA-Z0-9]+)_task-(?P<task>[a-zA-Z0-9]+)(?:_space-(?P<space>[a-zA-Z0-9]+))?"
    r"_contrast-(?P<contrast>[a-zA-Z0-9]+)_stat-(?P<stat>effect|variance|z)_statmap\.nii\.gz$"
)


def collect_subject_maps(output_dir: Path, runs: list[Run], task: str,
                         space: str | None = None) -> pd.DataFrame:
    """Subject-level maps written by the participant level, with their design information.

    Parameters
    ----------
    space : str, optional
        Keep only maps in this template space; None keeps every space (the ``space``
        column tells them apart: :func:`common_space` refuses to mix them).

    Returns
    -------
    DataFrame
        One row per subject x contrast: ``subject``, ``contrast``, ``space``, ``effect``,
        ``variance``, ``z`` (paths), plus ``condition``, ``period``,
        ``sequence`` and covariates for per-condition maps.
    """
    records = {}
    for path in sorted(Path(output_dir).glob("sub-*/func/sub-*_statmap.nii.gz")):
        match = _SUBJECT_MAP.match(path.name)
        if not match or match["task"] != task or (space is not None and match["space"] != space):
            continue
        key = (match["subject"], match["contrast"], match["space"])
        records.setdefault(key, {"subject": key[0], "contrast": key[1],
                                 "space": key[2]})[match["stat"]] = path
    table = pd.DataFrame(list(records.values()))
    if table.empty:
        return table
    table = table.dropna(subset=["effect", "variance"])
    info = {}
    for run in runs:
        label = run.condition.lower() if run.condition != run.task else "stim"
        info[(run.subject, label)] = {"condition": run.condition, "period": run.period,
                                      "sequence": run.sequence, "session": run.session,
                                      **run.covariates}
    extra = pd.DataFrame([{"subject": s, "contrast": c, **v} for (s, c), v in info.items()])
    if extra.empty:
        return table
    table = table.merge(extra, on=["subject", "contrast"], how="left")
    # Subject-level values (participants.tsv: pain_side, age ...) also describe the maps that
    # combine sessions (differences, spec contrasts), so those are mirrored like the others.
    session_level = {"condition", "period", "session"}
    for column in [c for c in extra.columns if c not in session_level | {"subject", "contrast"}]:
        per_subject = extra.dropna(subset=[column]).groupby("subject")[column]
        constant = per_subject.agg(lambda v: v.iloc[0] if v.nunique() == 1 else None).dropna()
        missing = table[column].isna()
        if missing.any():
            table.loc[missing, column] = table.loc[missing, "subject"].map(constant)
    return table


def defined_contrasts(conditions: tuple[str, ...], first_level_contrasts: Iterable[str]) -> set[str]:
    """Subject-level contrast names the current spec defines (the group level uses only these).

    Parameters
    ----------
    conditions : tuple of str
        The spec's conditions (their per-condition maps and differences).
    first_level_contrasts : iterable of str
        The names of the spec's own contrasts (``first_level.contrasts``).
    """
    contrasts = trial_contrasts(conditions)
    return ({"stim"} | {c.lower() for c in conditions} | set(difference_contrasts(contrasts))
            | set(first_level_contrasts))


def keep_defined_contrasts(maps: pd.DataFrame, defined: set[str], warn: Warn) -> pd.DataFrame:
    """The maps of the contrasts in ``defined``; the others are left out with a warning.

    Raises
    ------
    InputError
        None of the maps is of a defined contrast.
    """
    stale = sorted(set(maps["contrast"]) - defined)
    if stale:
        warn(f"subject maps of contrast(s) {', '.join(stale)} are not defined by the current "
             "spec (left over from an earlier participant run?): not analysed")
    kept = maps[maps["contrast"].isin(defined)]
    if kept.empty:
        raise InputError(f"none of the subject maps' contrasts ({', '.join(stale)}) is defined by "
                         "the current spec: run the participant level with this spec")
    return kept


FIRST_LEVEL_SECTIONS = ("first_level", "events")
"""Spec sections whose values shape the subject maps (recorded under ``Parameters``)."""


def first_level_fingerprint(record: dict[str, Any] | None) -> str:
    """Short sha256 of the first-level spec sections a map was made with (``unrecorded`` if none)."""
    if record is None:
        return "unrecorded"
    text = json.dumps(record, sort_keys=True, allow_nan=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _recorded_first_level(path: Path) -> dict[str, Any] | None:
    try:
        params = json.loads(sidecar_path(path).read_text()).get("Parameters", {})
    except (OSError, ValueError, AttributeError):
        return None
    record = {k: params[k] for k in FIRST_LEVEL_SECTIONS if isinstance(params, dict) and k in params}
    return record or None


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def check_first_level_parameters(maps: pd.DataFrame, first_level: FirstLevelSpec,
                                 events: EventsSpec, warn: Warn | None = None
                                 ) -> dict[str, Any] | None:
    """The first-level parameters every subject map was made with; error if subjects differ.

    Parameters
    ----------
    maps : DataFrame
        :func:`collect_subject_maps` rows (``subject``, ``effect`` paths).
    first_level, events : FirstLevelSpec, EventsSpec
        The current spec's sections; a difference from the recorded parameters is a
        warning (the methods describe what the maps were made with).
    warn : callable, optional
        Receives that warning.

    Returns
    -------
    dict or None
        The recorded ``first_level`` and ``events`` sections (None if not recorded).

    Raises
    ------
    InputError
        Subjects whose maps were made with different first-level parameters:
        one line naming the subjects of each version and the keys that differ.
    """
    records: dict[str, dict[str, Any] | None] = {}
    by_print: dict[str, list[str]] = {}
    for subject, path in zip(maps["subject"], maps["effect"]):
        record = _recorded_first_level(Path(path))
        fp = first_level_fingerprint(record)
        records.setdefault(fp, record)
        if subject not in by_print.setdefault(fp, []):
            by_print[fp].append(subject)
    if len(by_print) > 1:
        versions = sorted(by_print.items(), key=lambda kv: -len(kv[1]))
        base = records[versions[0][0]] or {}
        keys = sorted({k for fp, _ in versions[1:] for k in _differences(base, records[fp] or {})})
        groups = " vs ".join(f"{', '.join(f'sub-{s}' for s in sorted(set(subs)))} ({fp})"
                             for fp, subs in versions)
        raise InputError(f"subject maps were made with different first-level parameters "
                         f"({', '.join(keys) or 'not recorded for some'}): {groups}; re-run the "
                         "participant level of these subjects with one spec")
    record = next(iter(records.values()), None)
    current = {"first_level": section_record(first_level), "events": section_record(events)}
    if record is not None and warn is not None:
        changed = _differences(record, current)
        if changed:
            warn(f"the subject maps were made with first-level parameters that differ from the "
                 f"current spec ({', '.join(changed)}): the group level and its methods use "
                 "those of the maps; re-run the participant level to apply the spec")
    elif record is None and warn is not None:
        warn("the subject maps' sidecars record no first-level parameters: the methods "
             "text describes the current spec")
    return record


def common_space(maps: pd.DataFrame) -> str | None:
    """The template space of all subject maps, and one grid; maps in different ones are refused.

    Raises
    ------
    InputError
        Maps in different spaces (set ``space`` in the spec) or on different grids.
    """
    labels = maps["space"].fillna("<none>")
    spaces = labels.unique()
    if len(spaces) > 1:
        which = "; ".join(
            f"{s}: " + ", ".join(f"sub-{x}" for x in sorted(maps.loc[labels == s, "subject"].unique()))
            for s in sorted(spaces))
        raise InputError(f"subject maps in different template spaces ({which}); refusing to mix them at "
                         "the group level: set 'space' in the spec to analyse one of them")
    grids = {}
    for path in maps["effect"]:
        img = nib.load(path)
        grids.setdefault((img.shape[:3], tuple(np.round(img.affine, 4).ravel())), Path(path).name)
    if len(grids) > 1:
        names = ", ".join(f"{name} {shape}" for (shape, _), name in grids.items())
        raise InputError(f"subject maps on different grids of one space ({names}); the group level does "
                         "not resample them: run the participant level at one resolution")
    space = spaces[0]
    return None if space == "<none>" else space
