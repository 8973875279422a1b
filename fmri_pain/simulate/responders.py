"""Simulated responders: a set fraction of sessions respond (pain relief >= 50 %) and differ in one ROI.

With ``simulate_trial(..., responder_effect={"roi": "dACC", "delta": 0.8, "fraction": 0.5})``
each subject x condition session is a responder with probability ``fraction`` (a draw
keyed by seed, subject and condition, apart from every other draw, so the rest of the
trial is unchanged). A responder's pain relief is drawn uniformly in [50, 90] %, a
non-responder's in [0, 45] % (so the rule ``pain_relief >= 50`` recovers the status
exactly), its VAS follows from the relief as usual, and its amplitude in ``roi`` is
higher by ``delta`` percent signal change (added after scaling, also with ``null``).
The status and the definition are recorded in ``truth.json`` under ``responders``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fmri_pain.simulate import model as M

RESPONDER_RELIEF = (50.0, 90.0)
NON_RESPONDER_RELIEF = (0.0, 45.0)


def check_responder_effect(effect: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The option as a plain dict with its defaults, or ``ValueError`` naming the bad field."""
    if effect is None:
        return None
    unknown = set(effect) - {"roi", "delta", "fraction", "conditions"}
    if unknown:
        raise ValueError(f"responder_effect: unknown key(s) {sorted(unknown)}")
    roi = effect.get("roi")
    names = [r.name for r in M.ROIS]
    if roi not in names:
        raise ValueError(f"responder_effect: roi {roi!r} is not one of {names}")
    delta = float(effect.get("delta", 0.0))
    fraction = float(effect.get("fraction", 0.5))
    if not math.isfinite(delta) or not 0.0 < fraction < 1.0:
        raise ValueError(f"responder_effect: delta must be finite and 0 < fraction < 1, got {delta}, {fraction}")
    conditions = tuple(effect.get("conditions") or M.CONDITIONS)
    if set(conditions) - set(M.CONDITIONS):
        raise ValueError(f"responder_effect: conditions {conditions} not among {M.CONDITIONS}")
    return {"roi": roi, "delta": delta, "fraction": fraction, "conditions": list(conditions)}


def is_responder(effect: Mapping[str, Any], rng: np.random.Generator, condition: str) -> bool:
    """Whether a session of ``condition`` responds (a Bernoulli(fraction) draw from its own ``rng``)."""
    draw = rng.random()  # drawn for every condition, so the draws do not depend on ``conditions``
    return condition in effect["conditions"] and bool(draw < effect["fraction"])


def responder_relief(rng: np.random.Generator, responder: bool) -> float:
    """Pain relief (%) of a responder or a non-responder session."""
    lo, hi = RESPONDER_RELIEF if responder else NON_RESPONDER_RELIEF
    return round(float(rng.uniform(lo, hi)), 1)


def responder_truth(effect: Mapping[str, Any], subjects: list[dict]) -> dict[str, Any]:
    """The ``responders`` record of ``truth.json``."""
    return {**effect,
            "definition": ("a session of a listed condition responds with probability fraction; responders: "
                           f"pain_relief U{RESPONDER_RELIEF} %, amplitude of roi + delta percent; "
                           f"non-responders: pain_relief U{NON_RESPONDER_RELIEF} %; recover with the rule "
                           "pain_relief >= 50"),
            "status": {f"sub-{s['label']}": {sess["condition"]: bool(sess.get("responder", False))
                                              for sess in s["sessions"]} for s in subjects}}
