"""The group GLM called with the sections of one AnalysisSpec, as ``pipeline/group.py`` passes them."""

from __future__ import annotations

from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.glm.second_level.fit import run_group
from fmri_pain.glm.second_level.outputs import GroupResult


def run_group_glm(output_dir, runs, spec: AnalysisSpec) -> GroupResult:
    """:func:`~fmri_pain.glm.second_level.fit.run_group` with ``spec``'s sections."""
    return run_group(output_dir, runs, spec.group, conditions=spec.conditions, task=spec.task,
                     space=spec.space, first_level=spec.first_level, events=spec.events)
