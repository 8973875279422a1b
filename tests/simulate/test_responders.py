"""The simulator's responder option: status by pain relief, a delta in one ROI, everything else unchanged."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.simulate import simulate_trial
from fmri_pain.simulate.plan import plan_subjects
from fmri_pain.simulate.responders import check_responder_effect

EFFECT = check_responder_effect({"roi": "dACC", "delta": 0.8, "fraction": 0.4})


def test_responders_get_relief_and_the_delta_and_nothing_else_changes():
    base = plan_subjects(60, seed=3, scale=1.0, null=False)
    with_effect = plan_subjects(60, seed=3, scale=1.0, null=False, responder_effect=EFFECT)
    n_resp = 0
    for a, b in zip(base, with_effect):
        assert a["sequence"] == b["sequence"] and a["subject_re"] == b["subject_re"]
        for sa, sb in zip(a["sessions"], b["sessions"]):
            responder = sb["responder"]
            n_resp += responder
            assert (sb["pain_relief"] >= 50) == responder
            assert sb["amplitudes"]["dACC"] == pytest.approx(sa["amplitudes"]["dACC"] + 0.8 * responder)
            assert {k: v for k, v in sb["amplitudes"].items() if k != "dACC"} == \
                   {k: v for k, v in sa["amplitudes"].items() if k != "dACC"}
            assert sb["stim_amplitude_ma"] == sa["stim_amplitude_ma"]
    lo, hi = stats.binom.interval(0.999, 180, 0.4)
    assert lo <= n_resp <= hi


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="roi 'V1' is not one of"):
        check_responder_effect({"roi": "V1", "delta": 1})
    with pytest.raises(ValueError, match="fraction"):
        check_responder_effect({"roi": "dACC", "delta": 1, "fraction": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        check_responder_effect({"roi": "dACC", "size": 1})


def test_truth_records_the_status_the_sessions_tables_imply(tmp_path):
    sim = simulate_trial(tmp_path, n_subjects=2, seed=1, n_volumes=20, raw=False, derivatives=True,
                         responder_effect={"roi": "dACC", "delta": 1.0, "fraction": 0.5,
                                           "conditions": ["SCS", "DUAL"]})
    truth = json.loads((sim.truth_dir / "truth.json").read_text())
    record = truth["responders"]
    assert record["roi"] == "dACC" and record["conditions"] == ["SCS", "DUAL"]
    for sub, status in record["status"].items():
        sessions = pd.read_csv(sim.bids_dir / sub / f"{sub}_sessions.tsv", sep="\t")
        assert "responder" not in sessions.columns  # the analysis must derive it
        for row in sessions.itertuples():
            assert (row.pain_relief >= 50) == status[row.condition]
        assert status["DRGS"] is False
        amps = truth["subjects"][sub]["sessions"]
        assert np.isfinite([s["amplitudes"]["dACC"] for s in amps.values()]).all()
