"""The responder maps step of the group level: status from the pathways, maps from the GLM.

The pathway analysis defines the responders (``group/pathways/desc-responders_table.tsv``); the
responder-vs-non-responder maps need the group level's subject maps and mask, so this
step hands the one to the other. What is not computed is added to the group's warnings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.glm.inference.responder_maps import ResponderMapsOutput
from fmri_pain.glm.second_level.outputs import GroupResult

LOGGER = logging.getLogger(__name__)


def run_responder_maps_step(group: GroupResult, pathways: dict[str, Path] | None,
                            spec: AnalysisSpec) -> ResponderMapsOutput | None:
    """Responder-vs-non-responder maps from the pathway analysis' ``desc-responders_table.tsv`` (when written)."""
    if not spec.responders.active:
        return None
    if not spec.pathways.enabled or not pathways or "responders" not in pathways:
        reason = ("responder maps not computed: " + ("the pathway analysis is disabled (pathways.enabled: "
                  "false), and it defines the responders" if not spec.pathways.enabled else
                  "no responder status (see group/pathways/desc-skipped_table.tsv)"))
        LOGGER.warning(reason)
        group.warnings.append(reason)
        return None
    from fmri_pain.glm.inference.responder_maps import run_responder_maps
    from fmri_pain.pathways.responders import read_responders

    result = run_responder_maps(group, read_responders(pathways["responders"]),
                                n_perm=spec.responders.map_permutations, seed=spec.inference.seed,
                                alpha=spec.group.fwe_alpha, n_jobs=spec.inference.n_jobs)
    group.warnings.extend(result.skipped)
    if result.summary is not None:
        pathways["responder_maps"] = result.summary
    return result
