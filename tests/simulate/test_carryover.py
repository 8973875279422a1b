"""The simulator's carry-over option: in the amplitudes of the period after the condition, and in truth.json."""

from __future__ import annotations

import json

import pytest

from fmri_pain.simulate import model as M
from fmri_pain.simulate.dataset import simulate_trial
from fmri_pain.simulate.plan import plan_subjects


def test_carryover_is_added_after_the_named_condition_only():
    plain = plan_subjects(6, 3, 1.0, False)
    carried = plan_subjects(6, 3, 1.0, False, {"DUAL": 0.4})
    n_after = 0
    for a, b in zip(plain, carried):
        assert a["sequence"] == b["sequence"]
        for sa, sb in zip(a["sessions"], b["sessions"]):
            after_dual = sb["period"] > 1 and b["sequence"][sb["period"] - 2] == "DUAL"
            assert sb["carryover_from"] == (b["sequence"][sb["period"] - 2] if sb["period"] > 1 else None)
            assert sb["carryover_percent"] == (0.4 if after_dual else 0.0)
            n_after += after_dual
            for roi in M.ROIS:
                diff = sb["amplitudes"][roi.name] - sa["amplitudes"][roi.name]
                active = sa["amplitudes"][roi.name] != 0
                assert diff == pytest.approx(0.4 if (after_dual and active) else 0.0, abs=1e-6), roi.name
    assert n_after == 4  # 6 Williams sequences: DUAL is followed by another condition in 4 of them


def test_carryover_in_truth_json(tmp_path):
    sim = simulate_trial(tmp_path, n_subjects=2, seed=0, voxel_size=8.0, n_volumes=20, raw=False,
                         carryover={"DUAL": 0.4}, effect_scale=2.0)
    truth = json.loads((sim.truth_dir / "truth.json").read_text())
    assert truth["carryover"]["after"] == {"DUAL": 0.8}  # scaled by effect_scale
    seen = False
    for info in truth["subjects"].values():
        for ses in info["sessions"].values():
            expected = 0.8 if ses["carryover_from"] == "DUAL" else 0.0
            assert ses["carryover_percent"] == pytest.approx(expected)
            seen |= ses["carryover_from"] == "DUAL"
    assert seen  # seed 0: both subjects have DUAL before their last period
    # the recorded amplitudes carry it: the DRGS session after DUAL vs the model without carry-over
    plain = plan_subjects(2, 0, 2.0, False)
    for subj in plain:
        info = truth["subjects"][f"sub-{subj['label']}"]
        for sess in subj["sessions"]:
            ses = info["sessions"][f"ses-{sess['session']}"]
            for roi, value in sess["amplitudes"].items():
                extra = ses["amplitudes"][roi] - value
                assert extra == pytest.approx(ses["carryover_percent"] if value else 0.0, abs=1e-6)
    with pytest.raises(ValueError, match="carryover"):
        simulate_trial(tmp_path / "bad", n_subjects=1, carryover={"TENS": 0.4}, raw=False)
