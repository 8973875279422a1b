"""Permutation inference of the carry-over and sequence maps: the right exchangeability per route."""

from __future__ import annotations

import numpy as np

from fmri_pain.config.inference import InferenceSpec
from fmri_pain.config.spec import spec_from_dict
from fmri_pain.glm.inference.group_contrasts import run_permutation_inference
from tests.glm.second_level.test_group_honesty import make_trial
from tests.support.group import run_group_glm


def test_sequence_route_permutes_whole_subjects_and_carryover_shuffles_within(tmp_path):
    spec = spec_from_dict({"group": {"carryover": True}})
    result = run_group_glm(tmp_path, make_trial(tmp_path, 12, spec), spec)
    result.maps = [m for m in result.maps if m.contrast in ("sequenceF", "carryoverF")]
    inference = InferenceSpec(n_perm=199, tfce=False)
    object.__setattr__(inference, "cluster_forming_p", None)  # the engine's "no clusters", which a spec cannot say
    outputs = {o.contrast: o for o in run_permutation_inference(result, inference, alpha=0.05)}
    seq = outputs["sequenceF"].result
    assert seq.scheme == "permute" and seq.n_rearrangements == 200  # 12 subjects, 6 sequences
    assert np.nanmin(seq.p_uncorrected) >= 1 / 200 and np.all(seq.p_fwe >= seq.p_uncorrected - 1e-12)
    carry = outputs["carryoverF"].result
    assert carry.scheme == "within"  # a within-subject effect: rows shuffled within subjects
    assert np.nanmin(carry.p_uncorrected) >= 1 / (carry.n_rearrangements)
