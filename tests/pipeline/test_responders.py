"""The responder maps step of the group level: maps from responders.tsv, or a recorded reason."""

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.config.spec import spec_from_dict
from fmri_pain.glm.second_level.outputs import GroupResult
from fmri_pain.pipeline.responders import run_responder_maps_step
from fmri_pain.pathways.responders import responder_status
from fmri_pain.bids.derivatives import write_tsv

RULES = {"rules": [{"column": "pain_relief", "at_least": 50}]}


def _group(tmp_path):
    shape = (5, 5, 4)
    mask = tmp_path / "task-stim_space-MNI152NLin2009aAsym_desc-group_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)), mask)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        path = tmp_path / f"sub-{i:02d}_scs.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.eye(4)), path)
        rows.append({"subject": f"{i:02d}", "contrast": "scs", "condition": "SCS", "effect": path,
                     "pain_relief": 80.0 if i < 4 else 10.0})
    return GroupResult(tmp_path, "stim", [], [r["subject"] for r in rows], [], mask, {}, pd.DataFrame(rows))


def test_maps_follow_the_pathways_status(tmp_path):
    group = _group(tmp_path)
    status = responder_status(group.subject_maps, spec_from_dict({"responders": RULES}).responders.rules)
    pathways = {"responders": write_tsv(status, tmp_path / "group" / "pathways" / "responders.tsv")}
    spec = spec_from_dict({"responders": {**RULES, "map_permutations": 50}})
    out = run_responder_maps_step(group, pathways, spec)
    assert set(out.paths) == {"SCS"} and out.paths["SCS"]["t"].is_file()
    assert pathways["responder_maps"] == out.summary and not group.warnings


def test_without_the_pathway_stage_the_reason_is_recorded(tmp_path):
    group = _group(tmp_path)
    spec = spec_from_dict({"responders": RULES, "pathways": {"enabled": False}})
    assert run_responder_maps_step(group, None, spec) is None
    assert "pathway analysis is disabled" in group.warnings[0]
    assert run_responder_maps_step(group, None, spec_from_dict({})) is None  # not asked for: nothing said
    assert len(group.warnings) == 1
