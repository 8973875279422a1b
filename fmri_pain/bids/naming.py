"""The output naming contract: BIDS entities and their order, contrast order, threshold descs.

:mod:`fmri_pain.bids.derivatives` builds every derivative name through :func:`bids_filename`, and
the analyst API (:mod:`fmri_pain.results`) reads them back through :func:`parse_bids_name`, so
the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fmri_pain.trial import CONDITIONS, trial_contrasts

ENTITY_ORDER: tuple[str, ...] = ("sub", "ses", "task", "acq", "run", "hemi", "space", "atlas", "res",
                                 "model", "contrast", "condition", "desc", "stat")
"""Entities of derivative file names, in the order they appear: BIDS entities in the order of its
entity table, ``atlas`` after ``space`` (as XCP-D writes it), and the statistical-model entities of
BEP041 (``model``: a BIDS Stats Model's ``model-<label>_smdl.json``; ``contrast``, ``stat``) and
``condition`` (a trial condition's part of a figure)."""

PYBIDS_ENTITIES: dict[str, str] = {"subject": "sub", "session": "ses", "task": "task",
                                   "acquisition": "acq", "run": "run", "hemi": "hemi",
                                   "space": "space", "atlas": "atlas", "res": "res",
                                   "model": "model", "contrast": "contrast", "condition": "condition",
                                   "desc": "desc",
                                   "stat": "stat", "suffix": "suffix", "extension": "extension"}
"""pybids' entity names (with :func:`pybids_config_path`'s config) -> the keys of file names."""

HEMISPHERES: tuple[str, ...] = ("L", "R")
"""The only values of ``hemi`` (BIDS: left or right hemisphere)."""

STIM_CONTRAST = "stim"
"""The run- and session-level contrast: ON > OFF of the session's condition."""

CONTRAST_ORDER: tuple[str, ...] = (STIM_CONTRAST, *trial_contrasts(CONDITIONS))
"""Order in which contrasts are listed: the session contrast, then the trial's contrast set
(:func:`fmri_pain.trial.trial_contrasts`); any other contrast follows, alphabetically."""

THRESHOLD_DESCS: dict[str, str] = {"fdr": "fdr", "fwe": "bonferroni"}
"""``desc`` of the parametrically thresholded group maps -> nilearn's ``height_control`` that made them."""

PARAMETRIC_METHODS: dict[str, str] = {**THRESHOLD_DESCS, "bonferroni": "bonferroni", "none": "fpr",
                                      "fpr": "fpr", "uncorrected": "fpr"}
"""Names accepted for parametric re-thresholding (the descs above and their synonyms) -> ``height_control``."""

PATHWAY_TABLES: dict[str, str] = {
    "roi_effects": "roiEffects", "roi_stats": "roiStats", "effect_sizes": "effectSizes",
    "equivalence": "equivalence", "carryover": "carryover", "sequence_stats": "sequenceStats",
    "connectivity_ppi": "connectivityPpi", "connectivity_ppi_stats": "connectivityPpiStats",
    "connectivity_correlation": "connectivityCorrelation",
    "connectivity_correlation_stats": "connectivityCorrelationStats",
    "behaviour": "behaviour", "decoding": "decoding", "skipped": "skipped",
    "responders": "responders", "responder_stats": "responderStats",
    "responder_prediction": "responderPrediction", "responder_maps": "responderMaps",
}
"""The tables of ``group/pathways/``: key (as the pathway stage, the report and
:meth:`fmri_pain.results.api.Results.pathway_table` name them) -> ``desc`` of
``desc-<desc>_table.tsv`` (:func:`pathway_table_name`)."""

PATHWAY_ATLAS = "painPathways"
"""``atlas-`` of the pain-pathway atlas; its ``desc-`` says which pain side it was built for
(``painLeft``, ``painRight``: node hemispheres follow the pain side) or ``given`` (an atlas given
to the run)."""

_NAME_RE = re.compile(
    r"^(?P<entities>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)(?P<ext>(?:\.[a-zA-Z0-9]+)+)$"
)
_ENTITY_RE = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)_")


def bids_filename(entities: Mapping[str, Any], suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities in canonical order.

    Parameters
    ----------
    entities : mapping
        Entity key -> value (``sub``, ``ses``, ``task``, ``run``, ``space``,
        ``contrast``, ``desc``, ``stat`` ...). ``None`` values are skipped.
    suffix : str
        e.g. ``bold``, ``statmap``, ``mask``.
    extension : str
        With leading dot, e.g. ``.nii.gz``.

    Examples
    --------
    >>> bids_filename({"sub": "01", "task": "stim", "contrast": "stim", "stat": "z"},
    ...               "statmap", ".nii.gz")
    'sub-01_task-stim_contrast-stim_stat-z_statmap.nii.gz'
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    if entities.get("hemi") not in (None, "", *HEMISPHERES):
        raise ValueError(f"BIDS entity hemi-{entities['hemi']!r} must be one of {HEMISPHERES}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) not in (None, "")]
    for key, value in entities.items():
        if value not in (None, "") and not str(value).isalnum():
            raise ValueError(f"BIDS entity {key}-{value!r} must be alphanumeric")
    return "_".join(parts + [suffix]) + extension


def parse_bids_name(name: str) -> dict[str, str] | None:
    """Split a BIDS-like file name into entities, suffix and extension.

    Parameters
    ----------
    name : str
        A file name such as ``task-stim_contrast-dual_desc-fdr_stat-z_statmap.nii.gz``.

    Returns
    -------
    dict or None
        Entity key -> value plus ``suffix`` and ``extension``; None if the name
        does not follow the ``key-value_..._suffix.ext`` pattern.

    Examples
    --------
    >>> parse_bids_name("sub-01_task-stim_run-1_design.tsv")
    {'sub': '01', 'task': 'stim', 'run': '1', 'suffix': 'design', 'extension': '.tsv'}
    """
    match = _NAME_RE.match(name)
    if match is None:
        return None
    entities = dict(_ENTITY_RE.findall(match["entities"]))
    entities["suffix"] = match["suffix"]
    entities["extension"] = match["ext"]
    return entities


def order_contrasts(names: Iterable[str]) -> list[str]:
    """Distinct contrast names in :data:`CONTRAST_ORDER`, unknown ones after it alphabetically."""
    order = {n: i for i, n in enumerate(CONTRAST_ORDER)}
    return sorted(set(names), key=lambda n: (order.get(n, len(order)), n))


def pybids_config_path() -> Path:
    """The pybids configuration of this package's entities (``contrast``, ``stat``, ``condition``).

    Give it after pybids' own configurations, so that every output is found by its entities::

        BIDSLayout(out, config=["bids", "derivatives", str(pybids_config_path())],
                   validate=False)

    pybids names the entities as in :data:`PYBIDS_ENTITIES` (``subject``, ``session`` ...).
    """
    return Path(__file__).with_name("fmri_pain_config.json")


def pathway_table_name(key: str, extension: str = ".tsv") -> str:
    """File name of a pathway table (:data:`PATHWAY_TABLES`), or of its sidecar (``.json``).

    Examples
    --------
    >>> pathway_table_name("roi_effects")
    'desc-roiEffects_table.tsv'
    """
    return bids_filename({"desc": PATHWAY_TABLES[key]}, "table", extension)


def label(*texts: str) -> str:
    """``texts`` as one BIDS label: alphanumeric camelCase.

    Examples
    --------
    >>> label("pain_relief"), label("behaviour", "vas_pain"), label("decoding", "dualVsScs", "all")
    ('painRelief', 'behaviourVasPain', 'decodingDualVsScsAll')
    """
    words = [w for text in texts for w in re.split(r"[^a-zA-Z0-9]+", str(text)) if w]
    if not words:
        raise ValueError(f"{texts!r} has no letter or digit to make a BIDS label of")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
